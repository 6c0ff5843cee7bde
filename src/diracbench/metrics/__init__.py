"""Evaluation metrics: PSNR/SSIM/data consistency (image_quality), LPIPS, FD-VGG, FID (perceptual).

Import the submodules directly (`from diracbench.metrics.perceptual import LPIPSMetric`); this
package module stays light so `python -m diracbench.metrics` and the workflow import it quickly.
"""
