#!/usr/bin/env bash
# A 12 s H.264/AAC HLS test stream (two renditions, 2 s segments) for the e2e harness.
set -euo pipefail
out="${1:-$(dirname "$0")/stream}"
mkdir -p "$out"
ffmpeg -hide_banner -loglevel error -y \
  -f lavfi -i testsrc2=size=640x360:rate=25 -f lavfi -i sine=frequency=440:sample_rate=48000 \
  -t 12 -filter_complex '[0:v]split=2[a][b];[b]scale=320:180[b2]' \
  -map '[a]' -map 1:a -map '[b2]' -map 1:a \
  -c:v libx264 -preset veryfast -g 50 -keyint_min 50 -sc_threshold 0 -c:a aac -b:a 64k \
  -b:v:0 800k -b:v:1 200k \
  -f hls -hls_time 2 -hls_playlist_type vod -hls_segment_filename "$out/v%v_%03d.ts" \
  -master_pl_name master.m3u8 -var_stream_map 'v:0,a:0 v:1,a:1' "$out/v%v.m3u8"
echo "$out/master.m3u8"
