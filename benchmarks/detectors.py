"""Identifier detectors: precision and recall on the labelled corpus, and speed, side by side.

    python -m benchmarks.detectors [--per-kind N] [--runs R]

The corpus (``benchmarks.pii_corpus``) holds N positives of every kind, N of each hard negative
and a few look-alikes. Printed per kind: true and false positives, misses, precision and recall
(the target for the checksum kinds is 0.99 both). Then speed on free text as a call centre
writes it (three in four notes hold no identifier): ``scan`` (Arrow pre-filter, candidates in
the rest, numpy checksums) against a baseline that runs every pattern over every text and
checks each candidate alone, the usual way. Both find the same identifiers; the run checks it.
Last line: one JSON object for scripts.
"""

import argparse
import json
import random
import statistics
import time

from benchmarks.pii_corpus import corpus, precision_recall
from transforms.detect import detectors

_FILLER = ('客户表示本月工资延迟发放，承诺下周三前还款', '已与客户确认还款计划，无异议',
           '客户未接听，已发送短信提醒', '客户要求分期，需上级审批', 'no answer; will call again')


def notes(n: int, seed: int = 7) -> list:
    rng = random.Random(seed)
    samples = corpus(max(n // 40, 10), seed)
    out = []
    for i in range(n):
        if i % 4 == 0:
            out.append(rng.choice(_FILLER) + '，' + rng.choice(samples)[0])
        else:
            out.append(rng.choice(_FILLER))
    return out


def baseline(texts) -> list:
    """Every pattern over every text, each candidate validated on its own."""
    found = []
    for row, text in enumerate(texts):
        for f in detectors._candidates([row], [text], detectors.KINDS):
            if detectors.valid(f.kind, [f.value])[0]:
                found.append(f)
    return detectors._resolve(found)


def _timed(fn, texts, runs):
    times, result = [], None
    for _ in range(runs):
        started = time.perf_counter()
        result = fn(texts)
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def main(argv=None):
    parser = argparse.ArgumentParser(prog='python -m benchmarks.detectors')
    parser.add_argument('--per-kind', type=int, default=2000)
    parser.add_argument('--texts', type=int, default=200_000)
    parser.add_argument('--runs', type=int, default=3)
    args = parser.parse_args(argv)
    samples = corpus(args.per_kind)
    figures = precision_recall(samples, detectors.scan([t for t, _ in samples]))
    print(f'corpus: {len(samples):,} texts')
    print(f'  {"kind":18s} {"found":>7s} {"false+":>7s} {"missed":>7s} {"precision":>10s} '
          f'{"recall":>7s}')
    for kind, (tp, fp, fn, precision, recall) in figures.items():
        mark = ' (checksum)' if kind in detectors.CHECKSUM_KINDS else ''
        print(f'  {kind:18s} {tp:7,d} {fp:7,d} {fn:7,d} {precision:10.4f} {recall:7.4f}{mark}')
    texts = notes(args.texts)
    scan_s, scanned = _timed(detectors.scan, texts, args.runs)
    base_s, based = _timed(baseline, texts, args.runs)
    assert scanned == based, 'scan and the baseline disagree'
    print(f'speed on {len(texts):,} call notes ({len(scanned):,} identifiers), median of '
          f'{args.runs}:')
    print(f'  scan      {len(texts) / scan_s:12,.0f} texts/s')
    print(f'  baseline  {len(texts) / base_s:12,.0f} texts/s')
    print(f'  scan / baseline: {base_s / scan_s:.1f}x')
    print(json.dumps({'precision_recall': {k: {'precision': v[3], 'recall': v[4]}
                                           for k, v in figures.items()},
                      'scan_texts_per_s': len(texts) / scan_s,
                      'baseline_texts_per_s': len(texts) / base_s}))


if __name__ == '__main__':
    main()
