"""Songs in and phrases out: the sources ingest reads, the demo corpus, song loading (`music`),
the note codes, the phrase shards and the song-level splits."""
