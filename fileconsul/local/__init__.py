"""The basepath: the scan, the local record and hash cache, the file transaction, the
put-back journal."""
