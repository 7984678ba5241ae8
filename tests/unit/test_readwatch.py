"""The read watch's decisions (:mod:`connector.pipeline.readwatch`): a partition that
started reading and reads nothing while Kafka holds records is sought again, then its
client is given up; one that reads, or has nothing to read, is left alone."""

from __future__ import annotations

from connector.pipeline.readwatch import FIRST_LOOK, SEEKS, ReadWatch, Verdict

TP = ("t", 0)


class Kafka:
    """Whether Kafka holds records from the start, and how often it was asked."""

    def __init__(self, holds: bool) -> None:
        self.holds, self.asked = holds, 0

    def __call__(self) -> bool:
        self.asked += 1
        return self.holds


def test_a_partition_that_reads_nothing_is_sought_again_then_given_up() -> None:
    watch, kafka = ReadWatch(FIRST_LOOK, 30.0), Kafka(True)
    watch.start(TP, 0, "it was assigned", now=100.0)
    assert watch.due(100.0 + FIRST_LOOK - 0.1) == []
    looks = [100.0 + FIRST_LOOK * (i + 1) for i in range(SEEKS + 1)]
    verdicts = [watch.look(TP, t, 0, can_read=True, holds=kafka) for t in looks]
    assert verdicts == [Verdict.SEEK] * SEEKS + [Verdict.GIVE_UP]
    assert TP not in watch and kafka.asked == SEEKS + 1


def test_a_partition_that_read_is_no_longer_watched_and_kafka_is_not_asked() -> None:
    watch, kafka = ReadWatch(FIRST_LOOK, 30.0), Kafka(True)
    watch.start(TP, 40, "an operator reset it", now=0.0)
    assert watch.look(TP, FIRST_LOOK, 40, can_read=True, holds=kafka) is Verdict.SEEK
    assert watch.look(TP, 2 * FIRST_LOOK, 47, can_read=True, holds=kafka) is Verdict.READS
    assert not watch and kafka.asked == 1


def test_a_partition_started_without_a_store_offset_reads_once_it_has_one() -> None:
    watch, kafka = ReadWatch(FIRST_LOOK, 30.0), Kafka(True)
    watch.start(TP, None, "it was assigned", now=0.0)
    assert watch.look(TP, FIRST_LOOK, 3, can_read=True, holds=kafka) is Verdict.READS
    assert kafka.asked == 0


def test_nothing_to_read_spaces_the_looks_out_up_to_the_longest_wait() -> None:
    watch, kafka = ReadWatch(FIRST_LOOK, 30.0), Kafka(False)
    watch.start(TP, 0, "it was assigned", now=0.0)
    now, gaps = FIRST_LOOK, []
    for _ in range(6):
        assert watch.look(TP, now, 0, can_read=True, holds=kafka) is Verdict.LATER
        ((_, watched),) = watch.due(10_000.0)
        gaps.append(watched.due - now)
        now = watched.due
    assert gaps == [5.0, 10.0, 20.0, 30.0, 30.0, 30.0]
    # Records come: the seeks are counted from then, FIRST_LOOK apart.
    kafka.holds = True
    assert watch.look(TP, now, 0, can_read=True, holds=kafka) is Verdict.SEEK
    ((_, watched),) = watch.due(10_000.0)
    assert watched.due == now + FIRST_LOOK


def test_while_nothing_can_be_read_no_seek_is_spent_and_kafka_is_not_asked() -> None:
    watch, kafka = ReadWatch(FIRST_LOOK, 30.0), Kafka(True)
    watch.start(TP, 0, "it was assigned", now=0.0)
    for i in range(10):
        at = FIRST_LOOK * (i + 1)
        assert watch.look(TP, at, 0, can_read=False, holds=kafka) is Verdict.LATER
    assert kafka.asked == 0
    at = FIRST_LOOK * 11
    verdicts = [
        watch.look(TP, at + FIRST_LOOK * i, 0, can_read=True, holds=kafka) for i in range(3)
    ]
    assert verdicts == [Verdict.SEEK, Verdict.SEEK, Verdict.GIVE_UP]


def test_a_look_before_its_time_or_at_a_dropped_partition_decides_nothing() -> None:
    watch, kafka = ReadWatch(FIRST_LOOK, 30.0), Kafka(True)
    watch.start(TP, 0, "it was assigned", now=0.0)
    assert watch.look(TP, 1.0, 0, can_read=True, holds=kafka) is Verdict.LATER
    watch.drop(TP)
    assert watch.look(TP, 100.0, 0, can_read=True, holds=kafka) is Verdict.LATER
    assert kafka.asked == 0 and not watch
    # Started again (assigned back): a fresh watch with its own seeks.
    watch.start(TP, 5, "it was assigned", now=200.0)
    assert watch.look(TP, 200.0 + FIRST_LOOK, 5, can_read=True, holds=kafka) is Verdict.SEEK


def test_a_partition_whose_records_came_in_a_batch_is_no_longer_watched() -> None:
    """Even a batch that fails (the store or the dead-letter topic down) proves that the
    client fetches the partition: it is not sought again."""
    watch, kafka = ReadWatch(FIRST_LOOK, 30.0), Kafka(True)
    watch.start(TP, 0, "it was assigned", now=0.0)
    watch.start(("t", 1), 0, "it was assigned", now=0.0)
    watch.fetched([TP])
    assert TP not in watch and ("t", 1) in watch
    assert watch.look(TP, FIRST_LOOK, 0, can_read=True, holds=kafka) is Verdict.LATER
    assert kafka.asked == 0
