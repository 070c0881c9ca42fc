"""Reads through pgshift with psycopg 3: a binary cursor and a prepared statement
(prepare=True), as fast as it goes until the file named by the second argument
exists (after 20 reads it makes that name with ".ready" added). Prints: reads, errors, wrong values, and the first error messages."""

import os
import sys

import psycopg

url, stop = sys.argv[1], sys.argv[2]
reads = errors = wrong = 0
messages = []
with psycopg.connect(url, autocommit=True) as conn:
    cur = conn.cursor(binary=True)
    while not os.path.exists(stop):
        key = 1 + reads % 1000
        try:
            cur.execute(
                "SELECT id, amount FROM orders WHERE id = %s", (key,), prepare=True
            )
            row = cur.fetchone()
            if row != (key, key % 1000):
                wrong += 1
                messages.append(f"{key}: {row!r}")
        except psycopg.Error as e:
            errors += 1
            messages.append(str(e).strip())
        reads += 1
        if reads == 20:
            open(stop + ".ready", "w").close()
print(reads, errors, wrong, messages[:3])
