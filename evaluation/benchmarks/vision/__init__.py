"""Benchmark the edge detector against ultralytics' own inference paths, on one machine, in one run.

    python -m evaluation.benchmarks.vision BCCD_DIR [--out DIR] [--epochs E] [--imgsz S] [--input-shape frames|square]
        [--weights BEST.pt] [--json]

BCCD_DIR is a Pascal VOC tree (Annotations/, JPEGImages/, ImageSets/Main/{train,val,test}.txt).
One run:

1. imports it as a YOLO dataset under OUT/dataset (`vision.datasets.voc.import_voc`);
2. trains yolov8n from scratch on it (`vision.training.train_detector`), or registers --weights;
3. exports FP32, INT8 and FP16 ONNX (`vision.release.export_version`), by default with an input
   shaped like the frames (imgsz on their long side: 320x256 for 640x480 at 320), else square;
4. scores the .pt and the three ONNX variants on the TEST split (`vision.validation.evaluate_detector`);
5. times, at 1 and 2 threads, on the test images decoded once beforehand (warm-up excluded):
   (a) ultralytics PyTorch predict, (b) ultralytics' ONNX predict on ultralytics' own (square)
   export, (c/d/e) the edge runtime FP32 / INT8 / FP16 end to end (`edge.bench.measure`), plus
   bare `session.run` for FP32 and INT8 and the share of pre+post processing relative to
   session.run; for information, (b) on the edge's own FP32 file and, above 1 thread, edge FP32
   with ONNX Runtime workers that block instead of spin-waiting (for cores shared with other work).
   The table sets each edge variant beside the ultralytics paths, as ratios, per thread count;
6. checks the targets: edge end-to-end <= 0.5x PyTorch predict at 2 threads, <= 0.8x ultralytics'
   ONNX predict, pre+post <= 10% of session.run, INT8 within 1 mAP50 point of FP32.

Paths are timed in rounds (a pass over the test frames each), taken in turns of --turn-frames
frames per path, the order flipped every turn, so a change of load on a shared machine hits them
all alike; the other processes' CPU use during each round is recorded. `n threads` means: ONNX Runtime intra-op threads n (the ultralytics ONNX session is
rebuilt with n threads, since `YOLO(onnx).predict` has no knob for it), cv2.setNumThreads(n), and
torch.set_num_threads(n) for the PyTorch path (re-applied before every round: ultralytics resets
it to min(8, cpu_count - 1) when a predictor is set up). The ultralytics ONNX path keeps
ultralytics' own torch setting for its torch-side pre/post (capped at n); the same path with
torch at n threads is timed too, for information, where that differs.

Modules: `steps` (frames of a split, given weights, the training curve), `timing` (the paths
and how they are timed), `report` (targets and the table), `cli` (the command and its phases).

Everything (machine, versions, command line, per-round figures) goes to OUT/bench_vision.json
and the table to OUT/bench_vision.txt; the table (or the JSON with --json) to stdout, progress
to stderr. The registry and metadata live in a LOOPLINE_HOME under OUT/home; nothing outside
OUT is written. It does not tune models or pick a production variant.
"""
