"""Data: the registry of data sets, their sources, batching and augmentation.

  registry             DatasetInfo facts of every data set (`DATASETS`)
  sources              IDX files and tfds sources; whole sets into memory
  own_data             sets named by path: folder:, npz:, tfds: (facts computed)
  examples             writes a small example of the folder and npz layouts
  idx                  the IDX file format of the MNISTs
  fetch                Fashion-MNIST from the Debian package, without root
  batching             stateless per-host index batches; the one host gather
  augment              crop, flip and normalisation on the device (JAX)
  imagenet             ImageNet on grain: decoding in worker processes
  imagenet_preprocess  torchvision's ImageNet recipe on one example (PIL)
  loader               what the training loop reads (`open_data`)

Nothing is imported here, so that grain's worker processes, which import
`imagenet`, do not pay for the rest.
"""
