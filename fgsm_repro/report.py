"""Build ``results/REPORT.md`` from the results files: per claim ID, the paper's value, the
measured one, the tolerance band, within/outside, the profile, and the deviations."""

from __future__ import annotations

import json
import math
from pathlib import Path

from fgsm_repro import sampling as sampling_error
from fgsm_repro.config import experiment_configs, load_config
from fgsm_repro.errors import ReproError
from fgsm_repro.files import write_atomic
from fgsm_repro.processes import writes_files
from fgsm_repro.reference import TARGETS, claim_ids
from fgsm_repro.results import (
    ResultRecord,
    config_changed,
    config_gone,
    current_config_hash,
    read_results,
    results_folder,
    scan_results,
    stale_reason,
)

PROFILE_ORDER = ("paper", "fast", "ci")  # the main table shows the most faithful profile measured


def _fmt(value, digits: int = 2) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        if value != 0 and abs(value) < 0.01:
            return f"{value:.2g}"  # e.g. weight decays of 1e-4
        return f"{value:.{digits}f}"
    return str(value)


def best_records(records: list[dict], include_ci: bool = False) -> dict[str, dict]:
    """claim ID -> the record of the most faithful profile that measured it. `ci` runs are smoke
    runs (minutes of training), not reproductions: left out unless asked for."""
    best: dict[str, dict] = {}
    for rec in records:
        if rec["provenance"]["profile"] == "ci" and not include_ci:
            continue
        rank = PROFILE_ORDER.index(rec["provenance"]["profile"])
        for claim in rec["measured"]:
            if claim not in best or rank < PROFILE_ORDER.index(best[claim]["provenance"]["profile"]):
                best[claim] = rec
    return best


def target_records(records: list[dict], include_ci: bool = False) -> dict:
    """Target -> the record it is read from: of the records that measured its claim, the most
    faithful one that has its metric (a claim may be measured in parts by several experiments,
    e.g. A.rubbish_skew on MNIST and on CIFAR-10), else the most faithful one of the claim."""
    out = {}
    for target in TARGETS:
        ranked = sorted((r for r in records if target.claim in r["measured"]
                         and (include_ci or r["provenance"]["profile"] != "ci")),
                        key=lambda r: PROFILE_ORDER.index(r["provenance"]["profile"]))
        if ranked:
            out[target] = next((r for r in ranked if target.metric in r["measured"][target.claim]), ranked[0])
    return out


def _rerun(rec: dict, command: str = "`fgsm-repro reproduce --stale`") -> str:
    """What re-runs a stale result: `command`, unless its config is gone."""
    if config_gone(rec):
        return f"no config is left to re-run it: restore its config, or delete `results/{rec['_file']}`"
    return f"{command} re-runs it"


def _dataset_label(rec: dict) -> str:
    ds = rec["provenance"]["dataset"]
    label = ds["name"] + (f" — {ds['label']}" if ds.get("lossy") else "")
    return label


def _notes(target, rec: dict) -> str:
    """The target's own caveat, and where the protocol deviations of the run are listed."""
    parts = [target.note] if target.note else []
    if rec.get("deviations"):
        parts.append(f"{len(rec['deviations'])} protocol deviation(s): see {rec['name']} "
                     f"(`{rec['provenance']['profile']}`) below")
    return "; ".join(parts) or "—"


def summary_rows(results_dir: Path | None = None, files: set[str] | None = None) -> list[dict]:
    """Per numeric claim measured (ci runs included): claim, metric, paper, measured, band,
    verdict and profile, formatted for a terminal table. `files`: only the claims of these
    results files (what one command has just measured), whatever else results/ holds."""
    records = [r for r in read_results(results_dir) if files is None or r["_file"] in files]
    chosen = target_records(records, include_ci=True)
    stale = {rec["_file"]: stale_reason(rec) for rec in chosen.values()}  # once per record, not per row
    rows = []
    for t in TARGETS:
        rec = chosen.get(t)
        if rec is None or t.paper is None:
            continue
        rows.append(paper_row(t, rec["measured"][t.claim].get(t.metric), rec["provenance"]["profile"],
                              stale=bool(stale[rec["_file"]])))
    return rows


def paper_row(target, value: float | None, profile: str, *, stale: bool = False) -> dict:
    """One paper-vs-measured row for a terminal table: claim, metric, paper, measured, band,
    verdict and profile."""
    within = target.within(value) if value is not None else None
    return {"claim": target.claim, "metric": target.metric, "paper": f"{target.paper:g}",
            "measured": "—" if value is None else f"{value:.2f}", "band": f"±{target.band:g}",
            "verdict": {True: "within", False: "OUTSIDE", None: "—"}[within] + (" (stale)" if stale else ""),
            "profile": profile}


# A paper profile whose longest single training would take more than this here (at most, every
# epoch it may train) needs an accelerator: a shorter one is run a training at a time, each part
# finishing (and committed) within one sitting.
SITTING_HOURS = 2.5
CAUSES = ("sampling error", "needs an accelerator", "reduced profile", "not the paper's data", "unstated choice",
          "unexplained")


def _sample(rec: dict, claim: str, metric: str) -> dict | None:
    return rec.get("samples", {}).get(claim, {}).get(metric)


def paper_sample_size(target, chosen: dict) -> int | None:
    """How many examples the paper's number of `target` is of, where it is a share of another of
    its rates' positives (``target.among``): that rate × our count of the set the rate is of. None:
    as many as ours (the same test set, the same draws)."""
    if target.among is None:
        return None
    among = next((t for t in chosen if (t.claim, t.metric) == target.among), None)
    sample = _sample(chosen[among], *target.among) if among else None
    return round(among.paper / 100.0 * sample["n"]) if sample and among.paper is not None else None


def sampling(target, rec: dict, value, chosen: dict) -> tuple[str, bool | None]:
    """(the 95% interval of the measured value, shown; whether it is consistent with the paper's at
    95%). Several seeds: the mean's interval across seeds, and whether the paper's value lies in it.
    One run: :func:`fgsm_repro.sampling.interval` and :func:`~fgsm_repro.sampling.consistent`."""
    ci = rec.get("ci95", {}).get(target.claim, {}).get(target.metric)
    if ci is not None:
        return f"{value - ci:.2f}–{value + ci:.2f} (seeds)", abs(value - target.paper) <= ci
    sample = _sample(rec, target.claim, target.metric)
    bounds = sampling_error.interval(value, sample)
    if bounds is None:
        return "—", None
    return (f"{bounds[0]:.2f}–{bounds[1]:.2f}",
            sampling_error.consistent(value, sample, target.paper, paper_sample_size(target, chosen)))


def _cpu_records(records: list[dict]) -> dict[tuple[str, str], dict]:
    return {(r["name"], r["provenance"]["profile"]): r for r in records
            if r["provenance"].get("device", {}).get("platform") == "cpu"}


def paper_profile_plan(name: str, records: list[dict]) -> tuple[float, float] | None:
    """(hours of the longest single training, hours in all) of config `name`'s paper profile run from
    scratch on this project's CPU, at most (:func:`fgsm_repro.progress.from_scratch`); None unknown."""
    from fgsm_repro.progress import from_scratch

    path = experiment_configs().get(name)
    runs = from_scratch(path, "paper", _cpu_records(records)) if path else None
    if not runs:
        return None
    return max(r.seconds for r in runs) / 3600, sum(r.seconds * r.runs for r in runs) / 3600


def sensitivities(records: list[dict]) -> dict[tuple[str, str], list[dict]]:
    """(claim, metric) -> the sweeps of unstated settings that moved it: each a record's
    ``sensitivity[claim][metric]`` (the setting swept, the lowest and highest value it gave) with
    the record's name and profile."""
    out: dict[tuple[str, str], list[dict]] = {}
    for rec in records:
        profile = rec["provenance"]["profile"]
        if profile == "ci":  # smoke runs explain nothing
            continue
        for claim, metrics in rec.get("sensitivity", {}).items():
            for metric, sweep in metrics.items():
                out.setdefault((claim, metric), []).append(
                    {**sweep, "profile": profile, "record": f"{rec['name']} (`{profile}`)"})
    return out


def outside_cause(target, rec: dict, consistent: bool | None, records: list[dict],
                  sweeps: dict[tuple[str, str], list[dict]]) -> tuple[str, str]:
    """Why a number lies outside its band: (one of CAUSES, the reason in words)."""
    if consistent:
        return "sampling error", ("consistent with the paper's value at 95%: the gap is within both numbers' "
                                  "sampling error")
    profile = rec["provenance"]["profile"]
    if profile != "paper":
        plan = paper_profile_plan(rec["name"], records)
        if plan is None:
            return "reduced profile", f"`{profile}` profile; the paper profile has no projection here yet"
        longest, total = plan
        if longest > SITTING_HOURS:
            return "needs an accelerator", (f"`{profile}` profile; the paper profile is projected at up to "
                                            f"{total:.0f} h on this CPU (one training up to {longest:.0f} h)")
        return "reduced profile", (f"`{profile}` profile; the paper profile (up to {total:.1f} h on this CPU, each "
                                   f"training up to {longest:.1f} h) is not run yet")
    if rec["provenance"]["dataset"].get("lossy"):
        return "not the paper's data", rec["provenance"]["dataset"].get("label", "lossy copy of the data")
    # The sweeps of the number's own profile first, then the most faithful.
    ranked = sorted(sweeps.get((target.claim, target.metric), []),
                    key=lambda sweep: (sweep["profile"] != profile, PROFILE_ORDER.index(sweep["profile"])))
    for sweep in ranked:
        if sweep["low"] <= target.paper <= sweep["high"]:
            moves = (f"{sweep['setting']} moves it from {sweep['low']:.2f} to {sweep['high']:.2f}, over the paper's "
                     f"value: see {sweep['record']}")
            return ("sampling error" if sweep.get("kind") == "seed" else "unstated choice"), moves
    return "unexplained", ""


def claims_table(records: list[dict]) -> tuple[list[str], dict]:
    best = best_records(records)
    chosen = target_records(records)
    stale = {rec["_file"]: stale_reason(rec) for rec in chosen.values()}
    sweeps = sensitivities(records)
    lines = ["| ID | metric | paper | measured | 95% interval | band (±) | verdict | consistent at 95% | cause | "
             "profile | seeds | dataset | notes |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    counts = {"within": 0, "outside": 0, "shown": 0, "pending": 0, "causes": {c: [] for c in CAUSES}}
    for target in TARGETS:
        rec = chosen.get(target)
        if rec is None:
            continue
        value = rec["measured"][target.claim].get(target.metric)
        ci = rec.get("ci95", {}).get(target.claim, {}).get(target.metric)
        shown = _fmt(value) + (f" ± {ci:.2f}" if ci is not None else "")
        interval, consistent, cause = "—", None, "—"
        if target.kind == "figure":
            verdict = f"figure: [{value}]({value})" if value else "figure missing"
            shown = "—"
            counts["shown"] += 1
        elif target.kind == "qualitative":
            if target.metric == "figure" and value:
                shown = f"[figure]({value})"
            holds = rec["measured"][target.claim].get("holds")
            verdict = {True: "**holds**", False: "**does not hold**", None: "—"}[holds]
            counts["within" if holds else "outside"] += holds is not None
        elif value is None:
            verdict = "not measured"
        else:
            within = target.within(value)
            interval, consistent = sampling(target, rec, value, chosen)
            verdict = "—" if within is None else ("**within**" if within else "**outside**")
            if within is not None:
                counts["within" if within else "outside"] += 1
            if within is False:
                kind, why = outside_cause(target, rec, consistent, records, sweeps)
                counts["causes"][kind].append(f"{target.claim} {target.metric}")
                cause = f"{kind}" + (f": {why}" if why else "")
            if rec["provenance"]["dataset"].get("lossy"):
                verdict += " (JPEG mirror — not the paper's data)"
        if stale[rec["_file"]]:
            verdict += f" (**stale**: {stale[rec['_file']]}; {_rerun(rec)})"
        agrees = {True: "yes", False: "no", None: "—"}[consistent]
        lines.append(f"| {target.claim} | {target.metric} | {_fmt(target.paper)} | {shown} | {interval} | "
                     f"{_fmt(target.band)} | {verdict} | {agrees} | {cause} | {rec['provenance']['profile']} | "
                     f"{len(rec['provenance']['seeds'])} | {_dataset_label(rec)} | {_notes(target, rec)} |")
    counts["pending"] = len([c for c in claim_ids() if c not in best])
    return lines, counts


def summary_line(counts: dict) -> str:
    """The report's opening count, the outside ones split by cause (the unexplained ones named)."""
    causes = "; ".join(f"{kind} {len(rows)}" + (f" ({', '.join(rows)})" if kind == "unexplained" and rows else "")
                       for kind, rows in counts["causes"].items() if rows)
    return (f"Summary: {counts['within']} numbers within tolerance, {counts['outside']} outside"
            + (f" — by cause: {causes}" if causes else "")
            + f"; {counts['shown']} figures produced; {counts['pending']} claim IDs not measured yet "
            "(`ci`-profile runs are minutes-long smoke runs, listed only in their sections).")


def _table(rows: list[dict]) -> list[str]:
    if not rows:
        return []
    keys = list(rows[0])
    out = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    out += ["| " + " | ".join(_fmt(r.get(k), 3) for k in keys) + " |" for r in rows]
    return out


def experiment_section(rec: ResultRecord) -> list[str]:
    p = rec["provenance"]
    ds = p["dataset"]
    out = [f"### {rec['name']} — `{p['profile']}` profile ({', '.join(rec['claims'])})", ""]
    changed = config_changed(rec)
    stale = None if changed else stale_reason(rec)  # the dataset's part: the config's is `changed`
    if changed:
        out += [f"**Stale**: `configs/{rec['name']}.yaml` ({p['profile']} profile) has changed in what it runs since "
                "this run; these numbers are from the config recorded below. `fgsm-repro reproduce --stale "
                f"--profile {p['profile']}` re-runs it.", ""]
    elif stale:
        rerun = _rerun(rec, f"`fgsm-repro reproduce --stale --profile {p['profile']}`")
        out += [f"**Stale**: {stale}; {rerun}.", ""]
    if changed is False and p.get("config_hash") != current_config_hash(rec):
        out += [f"*Config form:* recorded with an earlier form of `configs/{rec['name']}.yaml` (hash "
                f"`{p.get('config_hash')}`); read in today's form it runs the same (hash "
                f"`{current_config_hash(rec)}`), so these numbers stand.", ""]
    if rec.get("description"):
        out += [rec["description"].strip(), ""]
    if rec.get("profile_note"):
        out += [f"*Profile:* {rec['profile_note']}", ""]
    if rec.get("deviations"):
        out += ["Protocol deviations and unstated choices:"] + [f"- {d}" for d in rec["deviations"]] + [""]
    out += ["Measured (percent unless named otherwise):", ""]
    for claim, metrics in rec["measured"].items():
        flat = {k: v for k, v in metrics.items() if not isinstance(v, dict)}
        out.append(f"- **{claim}**: " + ", ".join(f"{k} = {_fmt(v, 3)}" for k, v in flat.items()))
    out.append("")
    if rec.get("per_seed"):
        compared = [(t.claim, t.metric) for t in TARGETS if t.claim in rec["measured"] and t.kind != "figure"]
        rows = [{"seed": seed, **{f"{c} {m}": values.get(c, {}).get(m) for c, m in compared}}
                for seed, values in rec["per_seed"].items()]
        out += ["Per seed:", ""] + _table(rows) + [""]
    for name, rows in rec.get("tables", {}).items():
        if rows:
            out += [f"Table `{name}`:", ""] + _table(rows) + [""]
    for claim, fig in rec.get("figures", {}).items():
        out += [f"{claim}:", "", f"![{claim}]({fig})", ""]
    out += [
        "Provenance: "
        f"commit `{p['git_commit'][:12]}`{' (dirty tree)' if p.get('git_dirty') else ''}, "
        f"config `{p['config_file']}` (hash `{p['config_hash']}`), "
        f"dataset `{ds['name']}` {ds['version']} sha256 `{ds['sha256'][:16]}…` "
        f"({'LOSSY: ' + ds['label'] if ds.get('lossy') else 'lossless'}; {ds['source']}), "
        f"seeds {p['seeds']}, device {p['device']['platform']} "
        f"({p['device']['cpu']}, {p['device']['cpu_count']} cores), "
        f"wall time {p['wall_time_s']:.1f} s, finished {p['finished_at']}, file `results/{rec['_file']}`.",
        "",
    ]
    return out


def bench_section(results_dir: Path) -> list[str]:
    """The speed comparison of results/bench.json (written by `fgsm-repro bench`), if any."""
    path = Path(results_dir) / "bench.json"
    if not path.exists():
        return ["## Speed", "", "No benchmark yet: `make bench` writes results/bench.json.", ""]
    b = json.loads(path.read_text())
    p, m = b["provenance"], b["provenance"]["machine"]
    peak = ", ".join(f"{k} {v:.0f}" for k, v in b["matmul_peak_gflops"].items())
    lines = ["## Speed", "",
             f"JAX (this project) against PyTorch {m['versions'].get('torch')} eager + torchattacks "
             f"{m['versions'].get('torchattacks')}, same workloads, interleaved in one run on {m['cpu']} "
             f"({m['cpu_count']} cores, {m['platform']}); medians of {_reps(b)} timed runs after a warm-up"
             + (f" (at least {b['settings']['reps']}; a short workload gets more, until its JAX side is timed "
                f"for {b['settings']['min_timed_seconds']:g} s)" if b["settings"].get("min_timed_seconds") else "")
             + ". "
             "Each repetition runs the two sides back to back (an ensemble member by member, the sides "
             "alternating); *speedup* is the median over the repetitions of the ratio within each, so that a slow "
             "stretch of this shared machine slows both sides of a ratio (the ratio of the two medians is beside "
             "it). "
             f"Training epochs are timed on {b['settings']['examples']} examples (the conv net on "
             f"{b['settings'].get('conv_examples')}), attacks on {b['settings']['test_examples']} images. "
             f"JAX CPU tunings in effect (fgsm_repro.cpu_tuning): {', '.join(m.get('cpu_tuning', [])) or 'none'}. "
             f"Matmul peak (fp32 GFLOP/s) at the start: {peak}; each workload's bound uses the median of "
             "the peaks measured beside its repetitions (the machine's speed drifts). "
             f"Target: {b['target']}. *Products alone* (attacks, conv epoch): only the workload's products — "
             "for an attack every layer's forward product and its backward product to the layer's input, for the "
             "conv epoch each step's convolutions and dense products (forward, input and weight gradients, in "
             "the forms its training compiles to) — with the workload's shapes, batches and compiler options, "
             "on random operands, timed as a third side in the same repetitions: how close to the bound JAX's "
             "products come here even if everything else were free. "
             f"Commit `{p['git_commit'][:12]}`, {p['finished_at']}.", "",
             "| workload | JAX s | PyTorch s | speedup | ratio of medians | JAX GFLOP/s | JAX % of bound | "
             "PyTorch % of bound | JAX products alone, % of bound | JAX compile s | target met |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for w in b["workloads"]:
        products = f"{100 * w['products_roofline_fraction']:.0f}%" if "products_seconds" in w else "—"
        def pct(v):  # no bound for a workload whose amount of work varies (DeepFool's steps)
            return "—" if v is None else f"{100 * v:.0f}%"

        gflops = "—" if w["jax_gflops"] is None else f"{w['jax_gflops']:.0f}"
        lines.append(f"| {w['name']} ({w['description']}) | {w['jax_seconds']:.3f} | {w['torch_seconds']:.3f} | "
                     f"{w['speedup']:.2f}x | {w['torch_seconds'] / w['jax_seconds']:.2f}x | {gflops} | "
                     f"{pct(w['jax_roofline_fraction'])} | {pct(w['torch_roofline_fraction'])} | {products} | "
                     f"{w['jax_compile_seconds']:.2f} | {'yes' if w['meets_target'] else '**no**'} |")
    lines += [""] + [f"- {w['name']}: the JAX ensemble trains {w['jax_ensemble']}." for w in b["workloads"]
                     if "jax_ensemble" in w] + [""]
    return lines + _scaling(results_dir)


def _reps(bench: dict) -> str:
    counts = [w.get("reps", bench["settings"]["reps"]) for w in bench["workloads"]]
    return f"{min(counts)}" if min(counts) == max(counts) else f"{min(counts)}–{max(counts)}"


def _scaling(results_dir: Path) -> list[str]:
    """Each data-parallel run (bench.dp<N>.json) against one device, timed in the same run."""
    runs = sorted(Path(results_dir).glob("bench.dp*.json"))
    if not runs:
        return []
    lines = ["Data-parallel scaling of the JAX side (`fgsm-repro bench --data-parallel`, which times the same "
             "workload on one device in the same repetitions; several devices of one machine share its cores, "
             "so on a CPU this shows the overhead of the split, not a speed-up):", "",
             "| workload | devices | JAX s | JAX s on 1 device | speed-up | commit |", "|---|---|---|---|---|---|"]
    for path in runs:
        b = json.loads(path.read_text())
        for w in b["workloads"]:
            lines.append(f"| {w['name']} | {b['devices']} | {w['jax_seconds']:.3f} | "
                         f"{w['one_device_seconds']:.3f} | {w['scaling']:.2f}x | "
                         f"`{b['provenance']['git_commit'][:12]}` |")
    return lines + [""]


def _left_to_paper() -> dict[str, str]:
    """Claim ID -> a note for the claims of experiments that the reduced profiles do not run (their
    ``skip``): they are measured at the paper profile only."""
    out = {}
    for path in experiment_configs().values():
        try:
            skipping = [p for p in ("fast", "ci") if load_config(path, p).skip]
            claims = load_config(path, "paper").claims if skipping else []
        except ReproError:  # the results of a config that does not load are marked stale, saying why
            continue
        for claim in claims:
            out[claim] = (f"paper profile only: the `{'` and `'.join(skipping)}` profile{'s' * (len(skipping) > 1)} "
                          f"skip{'s' * (len(skipping) == 1)} it, see configs/{path.name}")
    return out


def build_report(results_dir: Path | None = None, claims_figure: str | None = None) -> str:
    results_dir = results_folder(results_dir)
    records, unreadable = scan_results(results_dir)
    table, counts = claims_table(records)
    best = best_records(records)
    ci_only = {c for c in best_records(records, include_ci=True) if c not in best}
    left = _left_to_paper()
    pending = [c + (" (ci smoke run only)" if c in ci_only else "") + (f" ({left[c]})" if c in left else "")
               for c in claim_ids() if c not in best]
    lines = [
        "# fgsm-repro: measured results beside the paper",
        "",
        "Goodfellow, Shlens & Szegedy, *Explaining and Harnessing Adversarial Examples*, ICLR 2015.",
        "This file is generated by `fgsm-repro report` from `results/*.json`; do not edit it by hand.",
        "",
        "How to read it: every row is one number of the paper (`fgsm-repro report --list` prints every claim "
        "ID with the paper's value and band). *measured* comes from the run named in the experiment's "
        "provenance below; *band* is the absolute tolerance in percentage points; *verdict* says whether the "
        "measured value lies within the band. *profile* says which protocol produced the number: `paper` "
        "(the paper's protocol), `fast` (a documented CPU-feasible reduction) or `ci` (minutes, a smoke run). "
        "Errors and confidences are percentages. With several seeds the value is the mean ± the 95% confidence "
        "half-width. *95% interval*: of one run's number, its sampling error on the examples it counts — "
        "Clopper–Pearson (exact binomial) for a rate, Student's t for a mean; across seeds with several (— where "
        "the run predates recording its sample sizes: re-running it fills it in). *Consistent at 95%*: whether "
        "the paper's value and ours differ by no more than both numbers' sampling error explains (Newcombe's "
        "hybrid score interval of two rates; for a mean a z test with our standard deviation standing in for "
        "the paper's), the paper's number taken to count as many examples as ours unless it is a share of its "
        "own mistakes or false positives, then of that count. *Cause*, for every number outside its band: "
        "sampling error (consistent at 95%), needs an accelerator (the paper profile's longest training would "
        f"take over {SITTING_HOURS:g} h on this CPU), reduced profile (the paper profile fits this CPU and is "
        "not run yet), not the paper's data, unstated choice (a sweep of a setting the paper does not give "
        "moves the number across the paper's value; the headline stays the setting chosen on validation), or "
        "unexplained. A verdict marked **stale** comes from a run whose config (in what it runs) or dataset has "
        "changed since; `fgsm-repro reproduce --stale --profile P` re-runs exactly those.",
        "",
        summary_line(counts),
        "",
        *([f"**{len(unreadable)} results file(s) could not be read** and are missing below: "
           + "; ".join(f"`{u}`" for u in unreadable) + ". Re-run their experiments.", ""] if unreadable else []),
        "## Claims",
        "",
        *([f"![Every claim: the paper's value in its tolerance band, and the measured value]({claims_figure})", ""]
          if claims_figure else []),
        *table,
        "",
        "## Experiments",
        "",
    ]
    by_profile = sorted(records, key=lambda r: (r["name"], PROFILE_ORDER.index(r["provenance"]["profile"])))
    for rec in by_profile:
        lines += experiment_section(rec)
    lines += bench_section(results_dir)
    lines += ["## Not measured yet", "", ", ".join(pending) if pending else "none", ""]
    return "\n".join(lines)


CLAIMS_FIGURE = "figures/claims.png"


def claim_points(records: list[dict]) -> list[dict]:
    """The numeric claims measured (paper, fast profiles), as :func:`fgsm_repro.curves.claims_figure` draws them."""
    rows = []
    for target, rec in target_records(records).items():
        value = rec["measured"][target.claim].get(target.metric)
        numeric = isinstance(value, int | float) and not isinstance(value, bool)
        if target.paper is None or target.band is None or not numeric or not math.isfinite(value):  # NaN: no place
            continue
        rows.append({"claim": target.claim, "metric": target.metric, "profile": rec["provenance"]["profile"],
                     "paper": target.paper, "band": target.band, "measured": value, "within": target.within(value)})
    return rows


def write_report(results_dir: Path | None = None) -> Path:
    """REPORT.md, and above its table the figure of every claim against the paper."""
    results_dir = results_folder(results_dir)
    path = results_dir / "REPORT.md"
    if not writes_files():  # one of several processes: the first writes it
        return path
    from fgsm_repro.curves import claims_figure

    points = claim_points(read_results(results_dir))
    if points:
        claims_figure(points, Path(results_dir) / CLAIMS_FIGURE)
    return write_atomic(path, build_report(results_dir, claims_figure=CLAIMS_FIGURE if points else None))
