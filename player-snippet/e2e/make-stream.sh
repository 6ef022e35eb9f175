#!/usr/bin/env bash
# A short H.264/AAC test stream for the e2e tests, as HLS (two small renditions, 2 s segments,
# master.m3u8) and as DASH (the same two video renditions without audio, 2 s fMP4 segments,
# manifest.mpd) for Shaka and dash.js.
#   make-stream.sh [OUT_DIR] [SECONDS]   (default: e2e/stream, 8 s); prints OUT_DIR/master.m3u8
set -euo pipefail
out="${1:-$(dirname "$0")/stream}"
seconds="${2:-8}"
mkdir -p "$out"
sources=(-f lavfi -i "testsrc2=size=320x180:rate=25" -f lavfi -i "sine=frequency=440:sample_rate=48000")
video=(-c:v libx264 -preset ultrafast -pix_fmt yuv420p -g 50 -keyint_min 50 -sc_threshold 0)
ffmpeg -hide_banner -loglevel error -nostdin -y "${sources[@]}" \
  -t "$seconds" -filter_complex '[0:v]split=2[a][b];[b]scale=160:90[b2]' \
  -map '[a]' -map 1:a -map '[b2]' -map 1:a \
  "${video[@]}" -c:a aac -b:a 48k -b:v:0 300k -b:v:1 100k \
  -f hls -hls_time 2 -hls_playlist_type vod -hls_segment_filename "$out/v%v_%03d.ts" \
  -master_pl_name master.m3u8 -var_stream_map 'v:0,a:0 v:1,a:1' "$out/v%v.m3u8"
# DASH without audio: AAC's priming makes the audio track a few ms longer than the video,
# and dash.js then sometimes waits at the end for ever instead of ending.
ffmpeg -hide_banner -loglevel error -nostdin -y "${sources[@]}" \
  -t "$seconds" -filter_complex '[0:v]split=2[a][b];[b]scale=160:90[b2]' \
  -map '[a]' -map '[b2]' \
  "${video[@]}" -b:v:0 300k -b:v:1 100k \
  -f dash -seg_duration 2 -use_template 1 -use_timeline 0 \
  -adaptation_sets 'id=0,streams=v' \
  -init_seg_name 'dash_init_$RepresentationID$.m4s' \
  -media_seg_name 'dash_$RepresentationID$_$Number%03d$.m4s' "$out/manifest.mpd"
echo "$out/master.m3u8"
