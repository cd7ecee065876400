#!/usr/bin/env python3
"""Writes land.path, the world outline embedded in `replay --report`.

Input: land-110m.json of the npm package world-atlas 2.0.2 (Natural Earth's
1:110m land, public domain, as TopoJSON; the package is ISC-licensed):

    npm pack world-atlas@2.0.2 && tar xzf world-atlas-2.0.2.tgz
    python3 src/report/world/make.py package/land-110m.json > src/report/world/land.path

Output: one SVG path in an equirectangular projection of 720 x 360 units
(x = (lon + 180) * 2, y = (90 - lat) * 2), whole units, relative moves,
rings of under 2 square units dropped, points closer than 1 unit merged,
rings cut where they wrap round the antimeridian.
"""
import json
import sys


def arcs_of(topo):
    sx, sy = topo["transform"]["scale"]
    tx, ty = topo["transform"]["translate"]
    out = []
    for arc in topo["arcs"]:
        x = y = 0
        pts = []
        for dx, dy in arc:
            x += dx
            y += dy
            pts.append((x * sx + tx, y * sy + ty))
        out.append(pts)
    return out


def ring(arcs, indexes):
    pts = []
    for i in indexes:
        a = arcs[i] if i >= 0 else list(reversed(arcs[~i]))
        pts.extend(a if not pts else a[1:])
    return pts


def project(lon, lat):
    return round((lon + 180) * 2), round((90 - lat) * 2)


def area(p):
    return abs(sum(p[i][0] * p[i - 1][1] - p[i - 1][0] * p[i][1] for i in range(len(p)))) / 2


def main():
    topo = json.load(open(sys.argv[1]))
    arcs = arcs_of(topo)
    geoms = topo["objects"]["land"]["geometries"]
    polys = []
    for g in geoms:
        if g["type"] == "Polygon":
            polys.append(g["arcs"])
        elif g["type"] == "MultiPolygon":
            polys.extend(g["arcs"])
    parts = []
    for poly in polys:
        for r in poly:
            pts = []
            for lon, lat in ring(arcs, r):
                p = project(lon, lat)
                if not pts or p != pts[-1]:
                    pts.append(p)
            if len(pts) < 3 or area(pts) < 2:
                continue
            # A ring that wraps round the antimeridian (Chukotka, Fiji) is
            # cut where it jumps across the map, or its edge would streak
            # from one side to the other.
            runs = [[pts[0]]]
            for p in pts[1:]:
                if abs(p[0] - runs[-1][-1][0]) > 360:
                    runs.append([])
                runs[-1].append(p)
            for run in runs:
                if len(run) < 2:
                    continue
                # One "l" per run; a minus sign separates numbers by itself.
                nums = []
                for (x0, y0), (x1, y1) in zip(run, run[1:]):
                    nums.extend((x1 - x0, y1 - y0))
                s = "M%d %dl" % run[0]
                for i, n in enumerate(nums):
                    s += ("" if i == 0 or n < 0 else " ") + str(n)
                parts.append(s + "z")
    sys.stdout.write("".join(parts) + "\n")


main()
