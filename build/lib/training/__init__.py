"""Fine-tuning recipe for resnet-cbam: data, stage schedule, callbacks, metrics, plots, Hub output."""
