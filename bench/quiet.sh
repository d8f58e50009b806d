# Sourced by the timing scripts (ddp.sh, zero.sh): is anyone else using the machine?
# busy_percent: the busy share of all CPUs over 2 s, in percent, from /proc/stat's first line
# (user nice system idle iowait irq softirq steal): 100 * (total - idle - iowait) / total.
# check_quiet NAME FORCE LOAD1 MAX_LOAD MAX_BUSY: LOAD1 is the load average read before the
# build (which raises it), the CPU sample is taken now, just before timing. Sets `warning`;
# above either limit it exits 3 unless FORCE is 1, then it warns and goes on.
busy_percent() {
  local a b
  a=$(head -1 /proc/stat); sleep 2; b=$(head -1 /proc/stat)
  printf '%s\n%s\n' "$a" "$b" | awk '
    { t = 0; for (i = 2; i <= 9; ++i) t += $i; tot[NR] = t; idle[NR] = $5 + $6 }
    END { dt = tot[2] - tot[1]; printf "%.0f", (dt > 0 ? 100 * (dt - idle[2] + idle[1]) / dt : 0) }'
}
check_quiet() {
  local name="$1" force="$2" load1="$3" max_load="$4" max_busy="$5" busy
  busy=$(busy_percent)
  warning=""
  if awk -v l="$load1" -v b="$busy" -v ml="$max_load" -v mb="$max_busy" \
       'BEGIN { exit !(l > ml || b > mb) }'; then
    warning="machine busy before the run: 1-minute load $load1 (limit $max_load), $busy% of $(nproc) CPUs busy (limit $max_busy%)"
    if ((!force)); then
      echo "$name: refusing to time on a busy machine: $warning." >&2
      echo "$name: wait until it is quiet (uptime, top), or pass --force to time anyway." >&2
      exit 3
    fi
    echo "$name: WARNING: $warning; timing anyway (--force), the numbers are not worth much" >&2
  fi
}
