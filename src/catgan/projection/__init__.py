"""Bring your own cat: find and align a face in a photo (face.py), invert it into a generator (encoder.py,
invert.py), store the latent (latent_file.py), edit it along unlabelled directions (directions.py) and
restore damaged photos through the generator (restore.py). Nothing here runs on import.

    face.py        find the face (a .cat file, the user's eyes, or OpenCV's detector) and align it as
                   `catgan prepare` does; the alignment's transform, for pasting back
    detect.py      OpenCV's cat-face cascade, calibrated to prepare's face square
    perceptual.py  a perceptual distance from frozen offline networks (EfficientNet-Lite0, the SimCLR encoder)
    encoder.py     image -> latent encoder for one generator: training, files (refused for another G)
    invert.py      the inversion: Adam on the latent (+ mask, degradation), optional pivotal tuning
    project.py     the pipeline: face -> encoder guess -> inversion -> Projection
    output.py      the files `catgan project` writes
"""
