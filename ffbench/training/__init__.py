"""One run or several seeds of one configuration, trained: the epoch loop, seed stacking, checkpoints,
backbones and transfer adaptation."""
