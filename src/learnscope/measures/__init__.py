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

Every public function and class of these modules (their ``__all__``) is importable from here,
imported on first use::

    from learnscope.measures import linear_cka
"""

from learnscope._exports import lazy_namespace

__getattr__, __dir__ = lazy_namespace(__name__, __path__, globals())
