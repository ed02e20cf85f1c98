"""Test fixtures in the layouts of licensed corpora (TIMIT, LibriSpeech + MFA, VoxCeleb1), made from the
speechocean762 speech in ``../shared`` (its audio, speakers, transcripts and phone alignments re-laid).

These are NOT the real corpora: the speech is speechocean762's (Mandarin-accented read English, half of it
children's), so numbers measured on them say that a recipe works, not how it compares with published
results. Build them with ``local/make_fixture.py``; the tests build small ones in temporary directories.
"""
