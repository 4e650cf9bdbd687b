/* eb_clock — monotonic and wall clocks in microseconds.
 *
 * Every duration in embroker (stage timings, deadlines, heartbeats) is a difference of
 * eb_now_us() values: CLOCK_MONOTONIC never jumps when the wall clock is set. Wall time is used
 * only for values stored or shown to people (row timestamps, log lines). */
#ifndef EB_CLOCK_H
#define EB_CLOCK_H

#include <stdint.h>

/* Microseconds since an arbitrary fixed point (CLOCK_MONOTONIC). Never fails. */
int64_t eb_now_us(void);

/* Microseconds since the Unix epoch (CLOCK_REALTIME). */
int64_t eb_wall_us(void);

/* Sleep for `us` microseconds, resuming after signals. */
void eb_sleep_us(int64_t us);

#endif
