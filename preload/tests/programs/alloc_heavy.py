"""Allocation-heavy multithreaded Python workload for the LD_PRELOAD tests.

Run with PYTHONMALLOC=malloc so every object goes through the C malloc under test (pymalloc would
serve small objects from its own arenas). Eight threads build and tear down dicts, lists, strings,
bytes and JSON documents from seeded generators; the printed digest must equal the one from a run
on glibc's malloc.
"""

import hashlib
import json
import random
import sys
import threading

ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 6
THREADS = 8


def work(seed, out):
    rng = random.Random(seed)
    h = hashlib.sha256()
    for r in range(ROUNDS):
        table = {}
        for i in range(2000):
            key = "k%d-%d" % (rng.randrange(5000), i)
            table[key] = [rng.random() for _ in range(rng.randrange(1, 12))]
        text = json.dumps(table, sort_keys=True)
        back = json.loads(text)
        words = sorted(text.split(","))
        blob = b"".join(w.encode() for w in words[:: max(1, len(words) // 500)])
        grown = bytearray()
        for i in range(300):
            grown += bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64)))
        h.update(str(len(back)).encode())
        h.update(hashlib.sha256(blob).digest())
        h.update(hashlib.sha256(bytes(grown)).digest())
        del table, text, back, words, blob, grown
    out[seed] = h.hexdigest()


def main():
    out = {}
    threads = [threading.Thread(target=work, args=(s, out)) for s in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    total = hashlib.sha256("".join(out[s] for s in range(THREADS)).encode()).hexdigest()
    print("threads", len(out), "digest", total)


if __name__ == "__main__":
    main()
