"""tongban.validation.gx_import: a validating process does not import scipy.stats and altair, and a process that
does use them gets the real modules."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

HERE = Path(__file__).parent

CHECK = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {here!r})
    from item_fixtures import GUANGZHOU, make_record
    from tongban.registry import load_registry
    from tongban.validation import validate_items

    outcome = validate_items([make_record(1), make_record(2, name="失")], load_registry().partner(GUANGZHOU))
    from tongban.validation.gx_import import DEFERRED, Deferred  # after: validating must have imported it

    assert [(f.row, f.element) for f in outcome.findings] == [(1, "name")], outcome.findings
    assert all(isinstance(sys.modules[name], Deferred) for name in DEFERRED), [sys.modules[n] for n in DEFERRED]

    # GX's own module that imported them: the stand-ins answer with the real modules
    from great_expectations.expectations.core import expect_column_kl_divergence_to_be_less_than as kl
    assert round(kl.stats.entropy([0.5, 0.5]), 4) == 0.6931
    assert kl.alt.Chart.__name__ == "Chart"
    import altair
    import scipy.stats
    assert not isinstance(sys.modules["scipy.stats"], Deferred) and scipy.stats.norm.cdf(0.0) == 0.5
    assert not isinstance(sys.modules["altair"], Deferred) and altair.Chart is kl.alt.Chart
    import scipy.stats._distn_infrastructure  # a submodule: imported through the real package
    print("ok")
    """
)


def test_validating_does_not_import_the_deferred_modules_and_using_them_still_works() -> None:
    run = subprocess.run(
        [sys.executable, "-c", CHECK.format(here=str(HERE))], capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0 and run.stdout.strip().endswith("ok"), run.stderr[-3000:]
