"""The matcher sharded by hash value: shards that each index some of the hashes, and the two-round reduce, give one
matcher's verdicts, counter changes, edges and evidence, whatever the shard count, arrival order and batching."""

from dataclasses import replace

import numpy as np
import pytest

from monitor.detect.matcher import MatcherSettings, MatchResult, OrderedMatcher
from monitor.detect.sharded_matcher import MatchReduce, MatchShard
from tests.detect.test_matcher import fingerprint, in_batches, queries, run


def run_sharded(settings: MatcherSettings, shards: int, requests) -> tuple[MatchResult, MatchReduce]:
    matchers = [MatchShard(settings, shards, s) for s in range(shards)]
    reduce = MatchReduce(settings.bucket_s)
    results = []

    def reduce_sealed():
        for sealed in zip(*(m.take_parts() for m in matchers), strict=True):
            results.append(reduce.reduce(sealed))

    for request in requests:
        for matcher in matchers:
            matcher.add(request, now=0.0)
            assert not len(matcher.advance(now=0.0).verdicts)  # a shard decides nothing alone
        reduce_sealed()
    for matcher in matchers:
        matcher.flush()
    reduce_sealed()
    return MatchResult.concat(results), reduce


@pytest.mark.parametrize("shards, seed, cap, generation", [(1, 0, 64, 50_000), (2, 1, 64, 50_000),
                                                           (3, 2, 4, 50_000), (5, 3, 2, 97)])
def test_shards_and_the_reduce_give_one_matchers_result(shards, seed, cap, generation):
    group = queries(seed=seed)
    other_kind = replace(group.take(np.arange(0, len(group), 3)), kind="64b")  # a second index
    order = np.random.default_rng(seed).permutation(len(group))
    requests = in_batches(group, order, 37, 3)
    requests += [replace(r, groups=[other_kind.take(np.isin(other_kind.event_id, r.groups[0].event_id))])
                 for r in requests[::4]]
    settings = MatcherSettings(bucket_s=60, grace_s=0, postings_cap=cap, generation_queries=generation)
    one = run(OrderedMatcher(settings), requests)
    sharded, reduce = run_sharded(settings, shards, requests)
    assert one.verdicts.near.sum() > 100 and one.verdicts.cross.any() and one.verdicts.own.any()
    assert fingerprint(sharded) == fingerprint(one)
    assert (reduce.asked > 0) == (shards > 1)  # round 2 asked for the parts a shard did not send


def test_a_shard_outside_the_count_is_refused():
    with pytest.raises(ValueError, match="not one of 3"):
        MatchShard(MatcherSettings(), 3, 3)
