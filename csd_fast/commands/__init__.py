"""The logic of each ``csd-fast`` subcommand (``cli.py`` only wires argparse to ``run(args)``)."""
