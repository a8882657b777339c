"""Operations on champions: re-test on the data as it is now, re-tune when stale, on a schedule."""
