"""Sharing a run: only its owner's token shares it; the share token opens it read-only (export only when the
owner allowed it); sharing again replaces the link, unsharing closes it."""

import json

import pytest

from distill_core import share
from distill_core.errors import DistillError
from distill_core.runs import new_run
from distill_core.session import run_session


@pytest.fixture()
def finished(tiny_config, tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILL_STUDIO_RUNS", str(tmp_path / "runs"))
    path, token = new_run()
    events = list(run_session(tiny_config.with_overrides({"steps": 1, "eval_every": 0, "probe_every": 0}), path))
    assert events[-1]["kind"] == "done"
    return path, token


def test_the_owner_shares_and_a_visitor_opens_read_only(finished):
    path, owner = finished
    with pytest.raises(DistillError, match="only the owner of run .* can share it"):
        share.share_run(path.name, "not-the-token")
    token = share.share_run(path.name, owner)
    assert share.link_query(path.name, token) == f"run={path.name}&share={token}"
    visitor = share.open_for(path.name, token)
    assert visitor["role"] == share.VIEWER and visitor["allow_export"] is False and visitor["out_dir"] == str(path)
    assert share.open_for(path.name, owner)["role"] == share.OWNER
    record = json.loads((path / share.SHARE_FILE).read_text())
    assert token not in json.dumps(record) and set(record) == {"share_sha256", "allow_export", "shared_at"}


def test_sharing_again_replaces_the_link_and_unsharing_closes_it(finished):
    path, owner = finished
    first = share.share_run(path.name, owner)
    second = share.share_run(path.name, owner, allow_export=True)
    with pytest.raises(DistillError, match="neither the run's own token nor its current share link"):
        share.open_for(path.name, first)
    assert share.open_for(path.name, second)["allow_export"] is True
    with pytest.raises(DistillError, match="only the owner"):
        share.unshare_run(path.name, second)  # a share token cannot close the link either
    share.unshare_run(path.name, owner)
    assert share.sharing(path) is None
    with pytest.raises(DistillError, match="does not open run"):
        share.open_for(path.name, second)


def test_only_a_finished_run_with_a_real_id_is_shared(finished, tmp_path):
    path, owner = finished
    unfinished, unfinished_token = new_run()
    with pytest.raises(DistillError, match="no finished run"):
        share.share_run(unfinished.name, unfinished_token)
    with pytest.raises(DistillError, match="is not a run id"):
        share.open_for("../" + path.name, owner)
    with pytest.raises(DistillError, match="no finished run"):
        share.open_for("20990101-000000-abcdef", "x")
