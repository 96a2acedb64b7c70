"""Console entry point of ``gantk``."""

from gantk.cli.app import app


def main() -> None:
    app(prog_name="gantk")
