"""Machine learning on one node: image decoding and validation, detectors and classifiers (OpenCV;
Keras inside the per-node ML process only), datasets and partitioners, the model registry, weight
updates and aggregation strategies (sans-IO, numpy), and the ML process itself. It knows nothing of
the cluster: it may import only the standard library, numpy, OpenCV, Keras and other `ml` modules;
never `net`, `node`, `jobs`, `training` or a frontend."""
