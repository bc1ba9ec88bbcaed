"""paperlib: the helper library of clarep-book.

A reproduction of "Canonical Latent Representations in Conditional Diffusion Models"
(Xu et al., arXiv 2506.09955). One module per concept of the paper:

- :mod:`paperlib.diffusion`: noise schedule, DDIM sampling / inversion / decoding, CFG.
- :mod:`paperlib.clarid`: extraneous directions, EVR, elbow, projection, CLARID.
- :mod:`paperlib.toy`: the 2-D hierarchical toy process and its MLP denoiser.
- :mod:`paperlib.data`: datasets (embedded shapes, CIFAR-10; ImageNet20 in :mod:`paperlib.imagenet`).
- :mod:`paperlib.dit`: the paper's latent DiT-XL/2 behind the book's CDM interface (:mod:`paperlib.models`).
- :mod:`paperlib.corruptions`: the CIFAR-10-C corruptions (15 types x 5 severities).
- :mod:`paperlib.robustness`: attacks, corruptions and the Backgrounds Challenge, evaluated per student.
- :mod:`paperlib.cache`: artifacts keyed by their config, with manifests.
- :mod:`paperlib.plotting`: the book's figures.
- :mod:`paperlib.setup`: seeding, device and versions for notebooks.
"""

__version__ = "0.1.0"
