"""GAN training on a StyleGAN2 backbone."""
