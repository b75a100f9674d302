"""Photo inputs: where a photo was taken (EXIF, XMP, gps.csv) and how its file becomes pixels."""
