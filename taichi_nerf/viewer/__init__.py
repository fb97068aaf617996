"""The live GGUI viewer (`app`): a trained run, or a training run as it trains."""
