"""What an event is to the counters: production traffic, an adversarial canary or a benign canary (int8 on the wire).

>>> import numpy as np
>>> codes = np.array([PRODUCTION, ADVERSARIAL_CANARY, BENIGN_CANARY], np.int8)
>>> (codes == PRODUCTION).tolist()
[True, False, False]
"""

PRODUCTION, ADVERSARIAL_CANARY, BENIGN_CANARY = 0, 1, 2
