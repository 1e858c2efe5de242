"""Songs in, phrase rolls out. One module per step of the way, read in this order:

- `song`: `Song` (a loaded file), `SongError` (why a file cannot be used), `song_format`.
- `midi`: the MIDI adapter: symusic parses into the `pretty_midi.PrettyMIDI` pretty_midi's own
  parser would build, faster, falling back to pretty_midi where the two pair notes
  differently.
- `load`: `read_song`: a MIDI or LPD `.npz` file as a pypianoroll `Multitrack`, size-checked
  before anything is allocated; every failure is a `SongError` with a quarantine reason.
- `tracks`: which configured track (params `tracks`) each source track merges into.
- `grid`: the merged, cropped roll at `representation.beat_resolution` (`multitrack_roll`,
  and `npz_roll`, the same straight from LPD's sparse arrays).
- `phrases`: bar activity and fixed-length phrases (`cut_phrases`, `song_phrases`).

The process pool that runs these over many songs is `lpdvae.data.pool`. This package imports
nothing heavy itself: `lpdvae.data.music.song` is cheap to import (ingest uses `song_format`).
"""
