"""The matcher sharded by hash value: shards that each index some of the hashes and follow the reduce's seals, and
the two-round reduce, give one matcher's verdicts, counter changes, edges and evidence, whatever the shard count,
arrival order, batching, how far each shard has read, the clock that decides the seals, and a restart of any of
them (pickled state) between the rounds."""

import pickle
from dataclasses import replace

import numpy as np
import pytest

from monitor.contracts.match_requests import MatchRequestBatch
from monitor.contracts.match_shards import (
    MatchKey,
    PairAnswers,
    PairAsks,
    Seal,
    ShardPairs,
    decode_control,
    decode_reply,
)
from monitor.detect.matcher import MatcherSettings, MatchResult, OrderedMatcher
from monitor.detect.sharded_matcher import MatchReduce, MatchShard, ReduceCheckpoint, ShardCheckpoint
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
    reduce.covered = []  # (seal, queries it covered), for the tests


    def follow(seal: Seal | None) -> None:
        if seal is None:
            return
        seal = Seal.decode(seal.encode())
        round_one = [ShardPairs.decode(m.seal(seal).encode()) for m in matchers]
        reduce.covered.append((seal, sum(len(k.duplicate) for k in round_one[0].kinds)))
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
    if seal_limit:  # more only where the seal took queries that came after their minute's seal, none after
        assert all(n <= seal_limit or seal.before == before.before
                   for (before, _), (seal, n) in zip(reduce.covered, reduce.covered[1:], strict=False))
        assert any(n == seal_limit for _, n in reduce.covered)  # the limit did bind


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
        shard.seal(Seal(0, 5, MatchKey(120.0)))
    with pytest.raises(ValueError, match="not one of 3"):
        MatchShard(MatcherSettings(), 3, 3)


class Bus:
    """The three topics, as lists of encoded messages (an offset is a place in a list), and the roles reading them:
    each reads a few new messages, publishes what they give and commits its read positions with its checkpoint in
    one step; a killed role is rebuilt from its last commit and the topics, as the daemons rebuild."""

    def __init__(self, settings: MatcherSettings, shards: int, requests, seal_limit: int, max_open: int, seed: int):
        self.settings, self.shards, self.seal_limit, self.max_open = settings, shards, seal_limit, max_open
        self.requests = [r.encode() for r in requests]
        self.control: list[bytes] = []
        self.replies: list[bytes] = []
        self.rng = np.random.default_rng(seed)
        self.reduce = MatchReduce(settings, shards, seal_limit, max_open)
        self.shards_ = [MatchShard(settings, shards, s) for s in range(shards)]
        self.reduce_at = {"requests": 0, "replies": 0}  # read positions, as committed
        self.shard_at = [{"requests": 0, "control": 0} for _ in range(shards)]
        self.reduce_meta, self.shard_meta = "", [""] * shards
        self.results: list[MatchResult] = []
        self.restarts = 0

    def step_reduce(self, finishing: bool = False) -> None:
        m, at = self.reduce, dict(self.reduce_at)
        for offset in range(at["requests"], min(len(self.requests), at["requests"] + int(self.rng.integers(0, 4)))):
            m.add(MatchRequestBatch.decode(self.requests[offset]), now=0.0, offset=offset)
            at["requests"] = offset + 1
        control, results = [], []
        for offset in range(at["replies"], min(len(self.replies), at["replies"] + int(self.rng.integers(0, 6)))):
            reply = decode_reply(self.replies[offset])
            if isinstance(reply, ShardPairs):
                control += [a.encode() for a in m.take_pairs(reply, offset)]
            elif (result := m.take_answers(reply, offset)) is not None:
                results.append(result)
            at["replies"] = offset + 1
        decide = m.finish if finishing and at["requests"] == len(self.requests) else (lambda: m.decide(now=0.0))
        while m.open_seals < self.max_open and (seal := decide()) is not None:
            control.append(seal.encode())
        self.control += control  # published and committed together
        self.results += results
        self.reduce_at, self.reduce_meta = at, m.reduce_checkpoint.to_json()

    def step_shard(self, s: int) -> None:
        m, at = self.shards_[s], dict(self.shard_at[s])
        for offset in range(at["requests"], min(len(self.requests), at["requests"] + int(self.rng.integers(0, 5)))):
            m.add(MatchRequestBatch.decode(self.requests[offset]), now=0.0, offset=offset)
            at["requests"] = offset + 1
        replies = []
        for offset in range(at["control"], min(len(self.control), at["control"] + int(self.rng.integers(0, 6)))):
            replies += m.take(decode_control(self.control[offset]), offset)
            at["control"] = offset + 1
        replies += m.follow()
        self.replies += [r.encode() for r in replies]
        self.shard_at[s], self.shard_meta[s] = at, m.shard_checkpoint.to_json()

    def kill_reduce(self) -> None:
        """Rebuilt from what it committed, through a pickle of nothing: only the topics and the checkpoint."""
        c = ReduceCheckpoint.from_json(self.reduce_meta)
        if c is None:
            self.reduce = MatchReduce(self.settings, self.shards, self.seal_limit, self.max_open)
            return
        requests = [(o, MatchRequestBatch.decode(self.requests[o]), 0.0) for o in range(self.reduce_at["requests"])]
        replies = [(o, decode_reply(self.replies[o])) for o in range(max(c.pairs_from, 0), self.reduce_at["replies"])
                   if c.pairs_from >= 0]
        self.reduce = MatchReduce.rebuilt(self.settings, self.shards, c, requests, replies, self.seal_limit,
                                           self.max_open)
        self.restarts += 1

    def kill_shard(self, s: int) -> None:
        c = ShardCheckpoint.from_json(self.shard_meta[s])
        if c is None:
            self.shards_[s] = MatchShard(self.settings, self.shards, s)
            return
        at = self.shard_at[s]
        requests = [(o, MatchRequestBatch.decode(self.requests[o])) for o in range(max(c.replay_from, 0),
                                                                                  at["requests"])]
        controls = [(o, decode_control(self.control[o])) for o in range(c.control_from, at["control"])
                    if c.control_from >= 0]
        self.shards_[s] = MatchShard.rebuilt(self.settings, self.shards, s, c, requests, controls)
        self.restarts += 1

    def run(self, kill_rate: float) -> MatchResult:
        for _ in range(20_000):
            finishing = self.reduce_at["requests"] == len(self.requests)
            who = int(self.rng.integers(0, self.shards + 1))
            if self.rng.random() < kill_rate:  # the step is lost with the role
                self.kill_reduce() if who == self.shards else self.kill_shard(who)
            elif who == self.shards:
                self.step_reduce(finishing)
            else:
                self.step_shard(who)
            if finishing and not self.reduce.open_seals and self.reduce.finish() is None:
                break
        assert not self.reduce.open_seals and not self.reduce.pending_queries
        return MatchResult.concat(self.results)

    def following_the_seals(self) -> MatchResult:
        """One matcher that matched what each seal covered, when it covered it."""
        one, read, parts = OrderedMatcher(self.settings), 0, []
        for message in self.control:
            seal = decode_control(message)
            if isinstance(seal, Seal):
                for offset in range(read, seal.through + 1):
                    one.add(MatchRequestBatch.decode(self.requests[offset]), now=0.0, offset=offset)
                read = max(read, seal.through + 1)
                parts.append(one._match_before(seal.before, seal.through))
        return MatchResult.concat(parts)


@pytest.mark.parametrize("shards, seed, generation, seal_limit, kill_rate", [
    (2, 0, 50_000, 40, 0.0), (2, 1, 50_000, 40, 0.05), (3, 2, 150, 25, 0.08), (4, 3, 97, 60, 0.04)])
def test_roles_rebuilt_from_their_checkpoints_and_the_topics_go_on_as_before(shards, seed, generation, seal_limit,
                                                                               kill_rate):
    """Shards and the reduce killed at random steps (what a step read and would have sent is lost with it), each
    rebuilt from its committed read positions, its checkpoint and the topics: one matcher's result, following the
    seals the reduce decided; small generations too (a restarted shard's index starts at its oldest generation)."""
    group = queries(seed=seed)
    order = np.argsort(group.ts + np.random.default_rng(seed).normal(0, 40, len(group)), kind="stable")
    requests = in_batches(group, order, 29, 3)
    settings = MatcherSettings(bucket_s=60, grace_s=0, generation_queries=generation)
    bus = Bus(settings, shards, requests, seal_limit, max_open=3, seed=seed)
    result = bus.run(kill_rate)
    assert (bus.restarts > 3) == (kill_rate > 0)
    one = bus.following_the_seals()
    assert one.verdicts.near.sum() > 100 and len(one.verdicts) == len(group)
    assert_same(result, one)
    if generation < 1000:  # indexes rotated: the restarts rebuilt from a later generation's first query
        assert len(bus.shards_[0]._indexes["64"].generation_openings) == 2
        lookbacks = {shard.lookback_s for shard in bus.shards_}  # the restarted ones' too
        assert len(lookbacks) == 1 and 0 < lookbacks.pop() < np.inf
