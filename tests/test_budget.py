"""The byte-budgeted cache: least recently used out until the bytes fit, an evicted value someone still holds
handed back instead of built twice, one build however many ask at once."""

import threading
import weakref

import torch

from distill_core.budget import ByteBudgetCache, model_bytes, tensor_bytes


class Blob:
    """A value of a given size (weak-referenceable, like a model)."""

    def __init__(self, size: int):
        self.size = size


def sized(budget: int) -> ByteBudgetCache:
    return ByteBudgetCache(budget, sizeof=lambda blob: blob.size)


def test_bytes_of_a_model_count_tied_weights_once():
    model = torch.nn.Sequential(torch.nn.Embedding(10, 4), torch.nn.Linear(4, 10, bias=False))
    assert model_bytes(model) == (10 * 4 + 4 * 10) * 4
    model[1].weight = model[0].weight  # tied, as a language model's input and output embeddings
    assert model_bytes(model) == 10 * 4 * 4
    assert tensor_bytes([torch.zeros(3, device="meta"), torch.zeros(2, dtype=torch.float16)]) == 4


def test_the_least_recently_used_go_first_until_the_bytes_fit():
    cache = sized(100)
    a, b, c = Blob(40), Blob(40), Blob(40)
    cache.put("a", a)
    cache.put("b", b)
    assert cache.get("a") is a  # now b is the least recently used
    cache.put("c", c)
    assert cache.keys() == ["a", "c"] and cache.bytes == 80 and cache.evictions == 1
    big = Blob(500)
    cache.put("big", big)  # over the budget alone: it stays (its caller needs it), everything else goes
    assert cache.keys() == ["big"] and cache.stats()["peak_bytes"] == 500


def test_an_evicted_value_still_held_is_handed_back_not_built_again():
    cache = sized(50)
    held = Blob(40)
    cache.put("held", held)
    cache.put("other", Blob(40))  # evicts `held`, which this test still holds
    builds = []
    assert cache.get_or_build("held", lambda: builds.append(1) or Blob(40)) is held and builds == []
    dropped = Blob(40)
    ref = weakref.ref(dropped)
    cache.put("dropped", dropped)
    cache.put("again", Blob(40))
    del dropped
    assert ref() is None and cache.get("dropped") is None  # nobody held it: gone


def test_one_build_however_many_ask_at_once():
    cache = sized(1000)
    started, release, builds = threading.Event(), threading.Event(), []

    def build():
        builds.append(1)
        started.set()
        release.wait(10)
        return Blob(10)

    results = []
    threads = [threading.Thread(target=lambda: results.append(cache.get_or_build("k", build))) for _ in range(4)]
    for thread in threads:
        thread.start()
    started.wait(10)
    release.set()
    for thread in threads:
        thread.join()
    assert len(builds) == 1 and len(results) == 4 and all(r is results[0] for r in results)


def test_the_bytes_held_follow_replacements_discards_and_clears():
    cache = sized(100)
    cache.put("a", Blob(30))
    cache.put("a", Blob(50))  # the same key again: its old bytes leave with it
    cache.put("b", Blob(20))
    assert cache.bytes == 70
    cache.discard("a")
    assert cache.bytes == 20 and cache.keys() == ["b"]
    cache.clear()
    assert cache.bytes == 0 and cache.keys() == []


def test_only_a_cache_of_models_collects_garbage_after_an_eviction(monkeypatch):
    import distill_core.budget as budget

    collections = []
    monkeypatch.setattr(budget.gc, "collect", lambda: collections.append(1))
    plain, models = sized(10), ByteBudgetCache(10, sizeof=lambda blob: blob.size, collect_evicted=True)
    for cache in (plain, models):
        cache.put("a", Blob(8))
        cache.put("b", Blob(8))  # evicts a
    assert plain.evictions == models.evictions == 1
    assert collections == [1]  # the model cache's eviction only
