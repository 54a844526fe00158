"""The web worker's garbage-collector set-up (transfer_site/gunicorn.conf.py, post_worker_init)."""

import gc
import importlib.util
import weakref
from pathlib import Path

import pytest

GUNICORN_CONF = Path(__file__).resolve().parents[2] / "transfer_site" / "gunicorn.conf.py"


def load_conf():
    spec = importlib.util.spec_from_file_location("gunicorn_conf", GUNICORN_CONF)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def restore_gc():
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


def test_a_loaded_worker_freezes_its_heap_and_collects_the_young_generation_less_often(restore_gc):
    conf = load_conf()
    gc.unfreeze()
    assert gc.get_freeze_count() == 0

    conf.post_worker_init(worker=None)

    assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == (conf.GC_GEN0_THRESHOLD, 20, 20)
    assert conf.GC_GEN0_THRESHOLD > 700  # CPython's default, which the hook raises


def test_cyclic_garbage_made_after_the_freeze_is_still_collected(restore_gc):
    conf = load_conf()
    conf.post_worker_init(worker=None)

    class Node:
        pass

    first, second = Node(), Node()
    first.other, second.other = second, first  # a cycle only the collector frees
    first_ref = weakref.ref(first)
    del first, second
    gc.collect()
    assert first_ref() is None
