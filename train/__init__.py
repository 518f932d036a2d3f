"""Training and evaluation entry points (`python -m train.<name> --help`)."""
