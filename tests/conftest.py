import pytest
from mmengine.registry import DefaultScope


@pytest.fixture(autouse=True)
def no_leaked_default_scope():
    """Each test starts without a default scope: a Runner built by an earlier
    test sets one process-wide, which changes where unscoped names resolve."""
    DefaultScope._instance_dict.clear()
    yield
    DefaultScope._instance_dict.clear()
