"""Constructor checks: what passes comes back normalised, what fails names the argument."""

import math

import numpy as np
import pytest

from learnscope.probes.checks import (
    check_bool,
    check_callable,
    check_choice,
    check_int,
    check_number,
    check_optional_int,
    check_schedule,
)
from learnscope.probes.schedule import every, log_spaced


def test_accepted_values_come_back_normalised():
    assert check_schedule(None, every(3)) == every(3)
    assert check_schedule(log_spaced(2), every(3)) == log_spaced(2)
    assert check_int(np.int64(4), "k", 1) == 4 and type(check_int(np.int64(4), "k", 1)) is int
    assert check_optional_int(None, "k", 1) is None
    assert check_number(np.float32(0.5), "t", low=0.0, high=1.0) == 0.5
    assert check_number(3, "t") == 3.0 and type(check_number(3, "t")) is float
    assert check_number(0.0, "t", low=0.0) == 0.0
    assert check_number(1.0, "t", low=0.0, high=1.0, low_open=True) == 1.0
    assert check_bool(False, "flag") is False
    assert check_choice("kde", "estimator", ("binning", "kde")) == "kde"
    assert check_callable(len, "fn", "fn(x)") is len


@pytest.mark.parametrize("call,message", [
    (lambda: check_schedule(10, every(1)), "schedule must be a Schedule"),
    (lambda: check_int(True, "top_k", 1), "top_k must be an integer >= 1, got True"),
    (lambda: check_int(2.0, "top_k", 1), "top_k must be an integer >= 1, got 2.0"),
    (lambda: check_int(0, "top_k", 1), "top_k must be an integer >= 1, got 0"),
    (lambda: check_optional_int(0, "chunk_size", 1), "chunk_size must be an integer >= 1"),
    (lambda: check_number(math.nan, "tol", low=0.0), "tol must be a finite number >= 0.0"),
    (lambda: check_number(math.inf, "tol"), "tol must be a finite number, got inf"),
    (lambda: check_number(True, "tol"), "tol must be a finite number, got True"),
    (lambda: check_number("1", "tol"), "tol must be a finite number"),
    (lambda: check_number(0.0, "v", low=0.0, low_open=True), "v must be a finite number > 0.0"),
    (lambda: check_number(1.5, "v", low=0.0, high=1.0, low_open=True),
     "v must be a finite number > 0.0 and <= 1.0, got 1.5"),
    (lambda: check_bool(1, "per_layer"), "per_layer must be True or False, got 1"),
    (lambda: check_choice("knn", "estimator", ("binning", "kde")),
     "unknown estimator 'knn'; choose from ('binning', 'kde')"),
    (lambda: check_callable("ce", "loss_fn", "loss_fn(outputs, targets)"),
     "loss_fn must be a callable loss_fn(outputs, targets), got 'ce'"),
])
def test_rejected_values_name_the_argument(call, message):
    with pytest.raises(ValueError) as e:
        call()
    assert message in str(e.value)
