"""The math of learnscope as pure functions on tensors and arrays, each oracle-tested.

One module per family:

* ``cka``            linear CKA (biased / unbiased), all-pairs ``cka_matrix``, ``MinibatchCKA``
* ``svcca``          SVCCA with a variance threshold
* ``information``    discrete entropy / MI / conditional MI, binning, KDE information plane
* ``simplicity``     agreement and I(F;Y|L) of Nakkiran et al.
* ``spectra``        ESD, Marchenko-Pastur fit, stable/effective rank, power-law alpha
* ``gradients``      gradient and update norms, per-example gradients, gradient noise
* ``curvature``      Hessian-vector products, top eigenvalue, Hutchinson trace
* ``landscape``      interpolation between models, barriers, filter-normalised slices
* ``per_example``    learned epoch, forgetting events, data maps, suspicious examples
* ``ntk``            empirical NTK and training response
* ``linear_regions`` ReLU activation patterns and region counts
* ``superposition``  feature norms, interference, feature dimensionality
* ``least_squares``  min-norm solutions, gradient-descent paths, Marchenko-Pastur law
* ``matrix_completion`` deep matrix factorization, min-Frobenius completion, effective rank
* ``parity``         Walsh-Hadamard gradient variance over parities, GF(2) elimination
* ``approximation``  steep-sigmoid staircases and their sup error
* ``scalar_autograd`` a tiny scalar reverse-mode engine (micrograd-style)
* ``autograd_graph`` torch.autograd's recorded graph as nodes/edges, traced backward order
* ``region_counts``  packed activation-pattern codes, region ids for maps
* ``effective_dimension`` participation ratio, near-duplicate units, Lanczos Hessian spectrum
* ``sharpness``      warm-started power iteration for the top Hessian eigenvalue
* ``neural_collapse`` NC1-NC4 of penultimate features
* ``fourier``        per-unit Fourier concentration of embeddings
* ``frequency``      per-frequency error of a residual, first-passage times
* ``lazy``           linearised (kernel) gradient descent, diagonal nets, min-l1 / min-l2
* ``acquisition``    active-learning acquisition scores
* ``pruning``        magnitude-pruning masks (iterative, layer-wise), random masks

Every public function and class of these modules (their ``__all__``) is importable from here,
imported on first use::

    from learnscope.measures import linear_cka
"""

from learnscope._exports import lazy_namespace

__getattr__, __dir__ = lazy_namespace(__name__, __path__, globals())
