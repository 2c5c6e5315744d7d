"""The matcher sharded by hash value: shards that each index some of the hashes and follow the reduce's seals, and
the two-round reduce, give one matcher's verdicts, counter changes, edges and evidence, whatever the shard count,
arrival order, batching, how far each shard has read, the clock that decides the seals, and a restart of any of
them (pickled state) between the rounds."""

import pickle
from dataclasses import replace

import numpy as np
import pytest

from monitor.contracts.match_shards import PairAnswers, PairAsks, Seal, ShardPairs
from monitor.detect.matcher import MatcherSettings, MatchResult, OrderedMatcher
from monitor.detect.sharded_matcher import MatchReduce, MatchShard
from tests.detect.test_matcher import fingerprint, in_batches, queries


def assert_same(got: MatchResult, expected: MatchResult) -> None:
    """Every verdict, edge and piece of evidence equal; counter changes equal but for float rounding (a seal of a
    few queries sums the clean confidences of a minute in another order)."""
    got_print, expected_print = fingerprint(got), fingerprint(expected)
    values = 8  # the counter values in the fingerprint
    assert got_print[:values] + got_print[values + 1:] == expected_print[:values] + expected_print[values + 1:]
    np.testing.assert_allclose(got_print[values], expected_print[values], rtol=0, atol=1e-9)


def one_matcher(settings: MatcherSettings, requests, clock) -> MatchResult:
    matcher, parts = OrderedMatcher(settings), []
    for offset, (request, now) in enumerate(zip(requests, clock, strict=True)):
        matcher.add(request, now=now, offset=offset)
        parts.append(matcher.advance(now=now))
    return MatchResult.concat([*parts, matcher.flush()])


def sharded(settings: MatcherSettings, shards: int, requests, clock,
            seal_limit: int | None = None) -> tuple[MatchResult, MatchReduce]:
    """The reduce reads each request and decides with the clock; the shards have read every request from the start
    (no clock of their own) and match only what each seal covers. Every message crosses the wire (encoded and
    decoded), and the shards' round 1 and answers reach the reduce in shuffled order."""
    reduce = MatchReduce(settings, shards, seal_limit)
    matchers = [MatchShard(settings, shards, s) for s in range(shards)]
    for matcher in matchers:
        for offset, request in enumerate(requests):
            matcher.add(request, now=0.0, offset=offset)
    rng, results = np.random.default_rng(shards), []

    def follow(seal: Seal | None) -> None:
        if seal is None:
            return
        seal = Seal.decode(seal.encode())
        round_one = [ShardPairs.decode(m.seal(seal).encode()) for m in matchers]
        asks = [PairAsks.decode(a.encode()) for pairs in rng.permutation(round_one) for a in reduce.take_pairs(pairs)]
        assert not reduce.take_pairs(round_one[0])  # delivered again: ignored
        answers = [PairAnswers.decode(matchers[a.shard].answer(a).encode()) for a in asks]
        with pytest.raises(ValueError, match="holds no parts of seal"):
            matchers[asks[0].shard].answer(asks[0])  # asked again: it has forgotten the seal
        answers += answers[:1]  # the first answer delivered twice: counted once
        done = [r for a in rng.permutation(answers) if (r := reduce.take_answers(a)) is not None]
        assert len(done) == 1
        results.extend(done)

    for offset, (request, now) in enumerate(zip(requests, clock, strict=True)):
        reduce.add(request, now=now, offset=offset)
        while (seal := reduce.decide(now=now)) is not None:
            follow(seal)
    while (seal := reduce.finish()) is not None:
        follow(seal)
    assert not reduce.open_seals
    return MatchResult.concat(results), reduce


@pytest.mark.parametrize("shards, seed, cap, generation, seal_limit", [
    (1, 0, 64, 50_000, None), (2, 1, 64, 50_000, None), (3, 2, 4, 50_000, 17), (5, 3, 2, 97, 1)])
def test_shards_and_the_reduce_give_one_matchers_result(shards, seed, cap, generation, seal_limit):
    """Seals of at most ``seal_limit`` queries too: a busy minute in many seals, what a shard keeps stays small."""
    group = queries(seed=seed)
    other_kind = replace(group.take(np.arange(0, len(group), 3)), kind="64b")  # a second index
    order = np.random.default_rng(seed).permutation(len(group))
    requests = in_batches(group, order, 37, 3)
    requests += [replace(r, groups=[other_kind.take(np.isin(other_kind.event_id, r.groups[0].event_id))])
                 for r in requests[::4]]
    settings = MatcherSettings(bucket_s=60, grace_s=0, postings_cap=cap, generation_queries=generation)
    clock = [0.0] * len(requests)
    one = one_matcher(settings, requests, clock)
    result, reduce = sharded(settings, shards, requests, clock, seal_limit)
    assert one.verdicts.near.sum() > 100 and one.verdicts.cross.any() and one.verdicts.own.any()
    assert_same(result, one)
    assert (reduce.asked > 0) == (shards > 1)  # round 2 asked for the parts a shard did not send
    assert reduce.seals >= (len(one.verdicts) / seal_limit if seal_limit else 1)


def test_the_seals_come_from_the_reduces_clock_not_the_shards():
    """Workers that go quiet stop holding the watermark after the idle time by the reduce's clock, and queries that
    come after their minute was sealed are matched with the next seal: here the clock changes what one matcher
    decides, and the shards, reading ahead with no clock, follow the reduce's seals to the same result."""
    group = queries(seed=7)
    rng = np.random.default_rng(7)
    order = np.argsort(group.ts + rng.normal(0, 30, len(group)) * (rng.random(len(group)) < 0.3), kind="stable")
    requests = in_batches(group, order, 23, 3)  # mostly in event-time order, some queries late
    settings = MatcherSettings(bucket_s=60, grace_s=10, idle_source_s=120)
    clock = [float(t) for t in np.cumsum(rng.exponential(45.0, len(requests)))]
    one = one_matcher(settings, requests, clock)
    assert fingerprint(one) != fingerprint(one_matcher(settings, requests, [0.0] * len(requests)))
    result, reduce = sharded(settings, 3, requests, clock)
    assert fingerprint(result) == fingerprint(one) and one.verdicts.near.any()


def test_every_role_pickled_between_the_rounds_goes_on_as_the_original():
    group = queries(seed=3)
    requests = in_batches(group, np.random.default_rng(3).permutation(len(group)), 41, 2)
    settings = MatcherSettings(bucket_s=60, grace_s=0)
    one = one_matcher(settings, requests, [0.0] * len(requests))
    reduce, shards = MatchReduce(settings, 2), [MatchShard(settings, 2, s) for s in range(2)]
    results = []
    for offset, request in enumerate(requests):
        for matcher in (reduce, *shards):
            matcher.add(request, now=0.0, offset=offset)
        seal = reduce.decide(now=0.0) if offset < len(requests) - 1 else reduce.finish()
        if seal is None:
            continue
        asks = [a for shard in shards for a in reduce.take_pairs(shard.seal(seal))]
        reduce, shards = pickle.loads(pickle.dumps((reduce, shards)))  # restarted between the rounds
        results += [r for a in asks if (r := reduce.take_answers(shards[a.shard].answer(a))) is not None]
    assert fingerprint(MatchResult.concat(results)) == fingerprint(one)


def test_a_shard_refuses_a_seal_past_what_it_has_read_and_a_shard_outside_the_count():
    shard = MatchShard(MatcherSettings(), 3, 1)
    with pytest.raises(ValueError, match="has read up to -1"):
        shard.seal(Seal(0, 120.0, 5))
    with pytest.raises(ValueError, match="not one of 3"):
        MatchShard(MatcherSettings(), 3, 3)
