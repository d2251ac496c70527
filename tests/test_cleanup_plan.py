"""Which releases cleanup removes: a pure function over the release list (no host needed)."""
from deploy.ssh.cleanup import plan


def releases(*items: tuple[str, str]) -> list[dict]:
    return [{"id": i, "status": s} for i, s in items]


def test_cleanup_keeps_the_last_k_good_releases_and_never_current_or_the_rollback_target():
    found = releases(("r1", "good"), ("r2", "good"), ("r3", "good"), ("r4", "good"), ("r5", "good"))
    assert plan(found, current="r5", keep=2) == ["r1", "r2", "r3"]
    assert plan(found, current="r3", keep=1) == ["r1", "r4"]  # r2: the rollback target of r3; r5: the newest


def test_failed_releases_do_not_count_toward_k_and_are_removed():
    found = releases(("r1", "good"), ("r2", "failed"), ("r3", "good"), ("r4", "failed"), ("r5", "good"))
    assert plan(found, current="r5", keep=2) == ["r1", "r2", "r4"]


def test_a_release_still_building_is_never_removed():
    found = releases(("r1", "good"), ("r2", "building"), ("r3", "good"))
    assert plan(found, current="r3", keep=1) == []
