"""kconv extension for the Lambda(squash) layer of fixtures/custom/lambda_squash.keras.

Keras stores only the function's registered name ('kconv_examples>squash'); this maps it to torch.

    kconv convert fixtures/custom/lambda_squash.keras -o out --extension examples/extensions/squash_lambda.py
"""
import torch

from kconv.extend import lambda_layer


def squash(x):
    return x * torch.sigmoid(x) - 0.5


lambda_layer(squash, function="squash", output_shape=lambda config, shapes: shapes[0])
