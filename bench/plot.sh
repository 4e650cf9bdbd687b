#!/usr/bin/env bash
# bench/plot.sh — gnuplot PNGs from the CSV files of one bench run (bench/run-serving calls it).
#
#   bench/plot.sh OUT_DIR
#
#   latency-vs-load.png   open loop: p50 and p99 latency against offered load (identity model and
#                         siglip-tiny), log-log; where the curve turns up is saturation
#   coldwarm.png          cold vs warm: loading / embedding / other, stacked, median ms
#   peers.png             siglip-base p50 latency and throughput at each concurrency: embroker,
#                         FastAPI + transformers, infinity-emb
#   scaling-workers.png   throughput against workers x max batch (siglip-tiny)
# A plot whose CSV is missing is skipped. Needs gnuplot (scripts/setup installs gnuplot-nox).
set -euo pipefail
out=${1:?usage: bench/plot.sh OUT_DIR}
command -v gnuplot >/dev/null || { echo "bench/plot.sh: gnuplot not found" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# CSV columns by name (the files carry a header row; the first column is a quoted label).
col() { # col FILE NAME -> 1-based index
    head -1 "$1" | tr ',' '\n' | grep -nx "$2" | cut -d: -f1
}
strip_label() { # drop the quoted label (it may hold commas) -> plain CSV with a header
    sed -E '1s/^case,//; 2,$s/^"[^"]*",//' "$1"
}

plots=()
if [ -f "$out/scaling-open-identity.csv" ] || [ -f "$out/scaling-open-tiny.csv" ]; then
    cmds=""
    for name in identity tiny; do
        f="$out/scaling-open-$name.csv"
        [ -f "$f" ] || continue
        strip_label "$f" >"$tmp/$name.csv"
        o=$(( $(col "$f" offered_rps) - 1 )); p50=$(( $(col "$f" p50_us) - 1 )); p99=$(( $(col "$f" p99_us) - 1 ))
        label=$([ $name = identity ] && echo "identity" || echo "siglip-tiny")
        cmds+="'$tmp/$name.csv' skip 1 using $o:(\$$p50/1000) with linespoints title '$label p50', "
        cmds+="'$tmp/$name.csv' skip 1 using $o:(\$$p99/1000) with linespoints dashtype 2 title '$label p99', "
    done
    gnuplot <<EOF
set terminal pngcairo size 900,560 noenhanced
set output '$out/latency-vs-load.png'
set datafile separator ','
set datafile missing ''
set logscale xy
set grid
set key top left
set title 'Open loop (Poisson arrivals): latency from the intended send time against offered load'
set xlabel 'offered load (requests/s)'
set ylabel 'latency (ms)'
plot ${cmds%, }
EOF
    plots+=(latency-vs-load.png)
fi

if [ -f "$out/coldwarm.csv" ]; then
    f="$out/coldwarm.csv"
    l=$(col "$f" loading_ms); e=$(col "$f" embedding_ms); o=$(col "$f" other_ms)
    awk -F, -v l=$l -v e=$e -v o=$o '
        /^"cold \(median\)"/ { print "\"cold: worker per request\"", $l, $e, $o }
        /^"warm broker \(median\)"/ { print "\"warm broker\"", $l, $e, $o }' "$f" >"$tmp/cw.dat"
    if [ -s "$tmp/cw.dat" ]; then
        gnuplot <<EOF
set terminal pngcairo size 700,480 noenhanced
set output '$out/coldwarm.png'
set style data histograms
set style histogram rowstacked
set style fill solid 0.8 border -1
set boxwidth 0.5
set grid ytics
set key top right
set title 'Cold vs warm: SigLIP-base, one image, median ms'
set ylabel 'ms'
plot '$tmp/cw.dat' using 2:xtic(1) title 'model loading', '' using 3 title 'embedding', '' using 4 title 'other'
EOF
        plots+=(coldwarm.png)
    fi
fi

if [ -f "$out/peers-embroker.csv" ]; then
    # one line per concurrency: c, embroker p50 ms, fastapi p50 ms, infinity p50 ms, then req/s
    awk -F, 'FNR == 1 { for (i = 1; i <= NF; i++) h[FILENAME, $i] = i; next }
        {
            sys = FILENAME ~ /embroker/ ? 1 : FILENAME ~ /fastapi/ ? 2 : 3
            cc = (FILENAME, "clients") in h ? h[FILENAME, "clients"] : h[FILENAME, "concurrency"]
            rc = (FILENAME, "achieved_rps") in h ? h[FILENAME, "achieved_rps"] : h[FILENAME, "req_per_s"]
            c = $cc; rps = $rc
            p50[c, sys] = $(h[FILENAME, "p50_us"]) / 1000; r[c, sys] = rps; cs[c] = 1
        }
        END { for (c in cs) printf "%s %s %s %s %s %s %s\n", c,
                  (c SUBSEP 1) in p50 ? p50[c, 1] : "-", (c SUBSEP 2) in p50 ? p50[c, 2] : "-",
                  (c SUBSEP 3) in p50 ? p50[c, 3] : "-", (c SUBSEP 1) in r ? r[c, 1] : "-",
                  (c SUBSEP 2) in r ? r[c, 2] : "-", (c SUBSEP 3) in r ? r[c, 3] : "-" }' \
        "$out/peers-embroker.csv" $(ls "$out"/peers-fastapi.csv "$out"/peers-infinity.csv 2>/dev/null) |
        sort -n >"$tmp/peers.dat"
    gnuplot <<EOF
set terminal pngcairo size 1000,460 noenhanced
set output '$out/peers.png'
set datafile missing '-'
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set grid ytics
set yrange [0:*]
set key below
set multiplot layout 1,2 title 'SigLIP-base on this CPU, six photos, closed loop'
set title 'p50 latency (ms)'
set xlabel 'concurrent clients'
plot '$tmp/peers.dat' using 2:xtic(1) title 'embroker', '' using 3 title 'FastAPI + transformers', '' using 4 title 'infinity-emb'
set title 'throughput (images/s)'
plot '$tmp/peers.dat' using 5:xtic(1) title 'embroker', '' using 6 title 'FastAPI + transformers', '' using 7 title 'infinity-emb'
unset multiplot
EOF
    plots+=(peers.png)
fi

if [ -f "$out/scaling-workers.csv" ]; then
    f="$out/scaling-workers.csv"
    wc_=$(col "$f" workers); bc=$(col "$f" max_batch); rc=$(col "$f" achieved_rps)
    # the label is quoted without commas here ("closed c16 w1 b8"), so plain field numbers work
    awk -F, -v w=$wc_ -v b=$bc -v r=$rc 'NR > 1 { print "\"" $w " worker" ($w > 1 ? "s" : "") ", batch " $b "\"", $r }' "$f" >"$tmp/sw.dat"
    gnuplot <<EOF
set terminal pngcairo size 800,460 noenhanced
set output '$out/scaling-workers.png'
set style data histograms
set style fill solid 0.8 border -1
set boxwidth 0.6
set grid ytics
set xtics rotate by -30
set yrange [0:*]
set title 'siglip-tiny, 16 clients: throughput against workers and maximum batch'
set ylabel 'images/s'
plot '$tmp/sw.dat' using 2:xtic(1) notitle
EOF
    plots+=(scaling-workers.png)
fi
echo "plots: ${plots[*]:-none}"
