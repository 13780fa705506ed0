"""Primes below n by the sieve of Eratosthenes."""


def primes(n: int) -> list[int]:
    sieve = [True] * n
    out = []
    for k in range(2, n):
        if sieve[k]:
            out.append(k)
            for m in range(k * k, n, k):
                sieve[m] = False
    return out
