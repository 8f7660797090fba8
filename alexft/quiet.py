"""Starting TensorFlow without its C++ start-up chatter on stderr."""
import os
import sys
import tempfile


def import_tensorflow_quietly():
    """Import TensorFlow and probe its devices with file descriptor 2 held back; return `tf`.

    TF 2.21 logs (oneDNN, CUDA probing) before its log level is read, so pointing stderr
    elsewhere for the import and the device probe is the only way to keep a terminal or a
    notebook clean. If that start-up fails, what it printed is shown after all. A user who
    set TF_CPP_MIN_LOG_LEVEL gets TensorFlow's logging exactly as they asked.
    """
    if "tensorflow" in sys.modules or "TF_CPP_MIN_LOG_LEVEL" in os.environ:
        import tensorflow as tf

        return tf
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices()
            return tf
        except BaseException:
            os.dup2(saved, 2)
            held.seek(0)
            sys.stderr.write(held.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
