"""Quality measures for generated cat faces, all offline.

    inception.py     the Inception-v3 (2015-12-05) pool3 extractor: uint8 images -> (N, 2048) features
    fid.py           FID and KID as pure functions of features, plus an update()/compute() accumulator
    prdc.py          precision / recall (k-NN manifolds) and density / coverage
    catface.py       the share of images in which OpenCV's cat-face Haar cascade finds a face
    memorisation.py  nearest training face per sample (Inception and pixel space) vs held-out real faces
    reference.py     per-dataset reference features, cached by content hash, size and resize method
    evaluate.py      evaluate() / evaluate_real() for `catgan evaluate`; FIDEvaluator for training

Importing this package loads nothing heavy: the network and the cascades are loaded by their
`load()` class methods and passed around as objects.
"""
