"""Several real ``twistd ilchat`` processes on one Redis and one MariaDB (tests.support.cluster)."""
