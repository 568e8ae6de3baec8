"""The `fgsm-repro` executable: Ctrl-C is taken from the first instant (before the command line's
libraries are imported), then :func:`fgsm_repro.cli.main` runs."""

from fgsm_repro import interrupts


def main() -> None:
    interrupts.watch()
    from fgsm_repro.cli import main as cli_main

    cli_main(watched=True)
