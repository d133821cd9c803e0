"""The task-free core: paths and atomic IO, the anime table, images, backbones, splits, metrics, the model store."""
