#!/bin/sh
# rollup.sh PID...: a line a process: pid name Pss Pss_Anon Pss_File (MB),
# the Pss of its kube-node mappings (MB), utime+stime (ticks).
for p in "$@"; do
	n=$(tr '\0' ' ' < "/proc/$p/cmdline" | awk '{print $1 ($2=="control-plane"?"/cp":"/"$2)}')
	n=${n##*/}
	k=$(awk '/^[0-9a-f]+-[0-9a-f]+ /{cur=$6} /^Pss:/{ if (cur ~ /kube-node$/) s+=$2 } END{printf "%.1f", s/1024}' "/proc/$p/smaps")
	awk -v n="$n" -v p="$p" -v k="$k" '/^Pss:/{a=$2}/^Pss_Anon:/{b=$2}/^Pss_File:/{c=$2} END{printf "%s %s %.1f %.1f %.1f %s", p, n, a/1024, b/1024, c/1024, k}' "/proc/$p/smaps_rollup"
	awk '{print " " $14+$15}' "/proc/$p/stat"
done
