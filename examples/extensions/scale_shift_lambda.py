"""kconv extension for the Lambda(scale_shift, arguments=...) layer of fixtures/custom/lambda_args.keras.

The Lambda's ``arguments`` (from its config) are passed as keywords.

    kconv convert fixtures/custom/lambda_args.keras -o out --extension examples/extensions/scale_shift_lambda.py
"""
from kconv.extend import lambda_layer


def scale_shift(x, factor=1.0, shift=0.0):
    return x * factor + shift


lambda_layer(scale_shift, function="scale_shift", output_shape=lambda config, shapes: shapes[0])
