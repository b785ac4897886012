#!/bin/bash
# alternating bench runs, old tree (301ca5e) and the working tree, same vocab and data
export OMP_NUM_THREADS=2
V=/work/shared/vocab/bert-base-chinese/vocab.txt
D=/work/shared/data/dureader_robust/dev.json
O=/root/mrc_out/benchpair
for i in 1 2; do
  (cd /tmp/b301 && /usr/bin/time -f "%e s" /work/main/.venv/bin/python -m mrc.bench --data $D --vocab $V --out $O/old_$i.json > $O/old_$i.log 2>&1)
  (cd /tmp/bnew && /usr/bin/time -f "%e s" /work/main/.venv/bin/python -m mrc bench --data $D --vocab $V --out $O/new_$i.json > $O/new_$i.log 2>&1)
done
echo done > $O/DONE
