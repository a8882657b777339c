"""Cron expressions as users write them, turned into APScheduler triggers.

Five fields (minute hour day month day-of-week) as in crontab, or six with seconds first.
Day-of-week follows cron: 0 and 7 are Sunday, 1 is Monday. APScheduler 3 counts from Monday
= 0, so `0 3 * * 1` handed to it unchanged would fire on Tuesdays; this module translates.
"""

from __future__ import annotations

from apscheduler.triggers.cron import CronTrigger

_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


def cron_trigger(expression: str, timezone: str = "UTC") -> CronTrigger:
    """The trigger for `expression`; ValueError with the reason if it is not one."""
    fields = expression.split()
    if len(fields) not in (5, 6):
        raise ValueError(
            f"expected 5 fields (minute hour day month day-of-week) or 6 (seconds first), "
            f"got {len(fields)}"
        )
    second = fields.pop(0) if len(fields) == 6 else "0"
    minute, hour, day, month, weekday = fields
    if day not in ("*", "?") and weekday not in ("*", "?"):
        # crontab runs when either field matches; APScheduler only when both do. Rather than
        # guess which one was meant, ask for one of them.
        raise ValueError(
            f"day of month ({day}) and day of week ({weekday}) are both set: cron runs on "
            "either, which is rarely meant; set one of them to *"
        )
    return CronTrigger(
        second=second,
        minute=minute,
        hour=hour,
        day=day,
        month=month,
        day_of_week=_weekdays(weekday),
        timezone=timezone,
    )


def _weekdays(field: str) -> str:
    """Cron's day-of-week field as APScheduler's day names."""
    if field in ("*", "?"):
        return "*"
    days: set[int] = set()
    for part in field.lower().split(","):
        span, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if span == "*":
            first, last = 0, 6
        elif "-" in span:
            first, last = (_day(p) for p in span.split("-", 1))
        else:
            first = last = _day(span)
            if step_text:
                last = 6
        if last < first:
            raise ValueError(f"day-of-week range '{span}' runs backwards")
        days.update(d % 7 for d in range(first, last + 1, step))
    return ",".join(_DAYS[d] for d in sorted(days))


def _day(text: str) -> int:
    if text in _DAYS:
        return _DAYS.index(text)
    if not text.isdigit() or int(text) > 7:
        raise ValueError(f"'{text}' is not a day of the week (0-7 or sun-sat)")
    return int(text)
