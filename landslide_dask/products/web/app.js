/* The landslide map page: Leaflet (vendored) over the tiles, vectors and facts written beside it.
 * Everything is read from files next to this one through <script> tags (data.js, vectors/*.js),
 * never fetch(): browsers refuse fetch() of file:// URLs, and the page must open from disk offline. */
(function () {
  "use strict";
  var M = window.LANDSLIDE_MAP;
  var errors = [];
  window.addEventListener("error", function (e) {
    errors.push(String(e.message || e));
    document.body.setAttribute("data-errors", errors.join(" | "));
  });
  var EMPTY = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGBgAAAABQABpfZFQAAAAABJRU5ErkJggg==";  // 1 px, transparent

  function fmt(v, d) { return (v === null || v === undefined) ? "–" : Number(v).toFixed(d); }
  function esc(s) { return String(s).replace(/[&<>"]/g, function (c) { return {"&": "&amp;", "<": "&lt;", ">": "&gt;", "\"": "&quot;"}[c]; }); }

  // tiles that exist; others show as transparent instead of a failed file:// load
  var PresentTiles = L.TileLayer.extend({
    initialize: function (url, present, options) {
      this._present = new Set(present);
      L.TileLayer.prototype.initialize.call(this, url, options);
    },
    getTileUrl: function (c) {
      var key = c.z + "/" + c.x + "/" + c.y;
      return this._present.has(key) ? L.TileLayer.prototype.getTileUrl.call(this, c) : EMPTY;
    }
  });

  var map = L.map("map", {minZoom: Math.max(0, M.zmin - 3), maxZoom: M.zmax + 3, zoomSnap: 0.5});
  map.attributionControl.setPrefix('<a href="leaflet/LICENSE">Leaflet</a>');
  map.fitBounds([[M.bounds[1], M.bounds[0]], [M.bounds[3], M.bounds[2]]]);
  L.control.scale({imperial: false}).addTo(map);
  if (M.attribution) { map.attributionControl.addAttribution(esc(M.attribution)); }

  var base = {}, overlays = {};
  base["none"] = L.layerGroup();
  M.rasters.forEach(function (r) {
    var layer = new PresentTiles("tiles/" + r.id + "/{z}/{x}/{y}.png", r.tiles, {
      minNativeZoom: M.zmin, maxNativeZoom: M.zmax, minZoom: 0, maxZoom: M.zmax + 3,
      attribution: r.attribution || "", opacity: r.opacity || 1, className: "layer-" + r.id
    });
    if (r.base) { base[r.title] = layer; } else { overlays[r.title] = layer; }
    if (r.on) { layer.addTo(map); }
  });
  if (!M.rasters.some(function (r) { return r.base && r.on; })) { base["none"].addTo(map); }

  function popup(f) {
    var p = f.properties || {};
    return "<b>Landslide</b><br>area " + fmt(p.area_m2, 0) + " m²<br>mean probability " + fmt(p.mean_prob, 2) +
      "<br>max probability " + fmt(p.max_prob, 2);
  }
  var drawn = 0;
  var polyStyle = {color: "#b10026", weight: 1.5, fillColor: "#e31a1c", fillOpacity: 0.25};
  var polygons = L.geoJSON(null, {
    style: polyStyle,
    onEachFeature: function (f, layer) { layer.bindPopup(popup(f)); drawn += 1; }
  });
  var v = M.vectors.landslides;
  if (v && v.mode === "single") {
    polygons.addData(M.data.landslides);
  } else if (v && v.mode === "tiled") {
    // polygons in tiles at zoom v.zoom keyed by centroid, loaded as the view moves; below that
    // zoom the probability tiles (max of their children) show where the landslides are
    var loaded = new Set(), present = new Set(v.tiles);
    M.addVectorTile = function (key, data) {
      polygons.addData(data);
      document.body.setAttribute("data-polygons", String(drawn));
    };
    var refresh = function () {
      if (!map.hasLayer(group) || map.getZoom() < v.zoom - 1) { return; }
      var b = map.getBounds(), z = v.zoom, n = Math.pow(2, z);
      function tx(lon) { return Math.floor((lon + 180) / 360 * n); }
      function ty(lat) { var r = lat * Math.PI / 180; return Math.floor((1 - Math.log(Math.tan(r) + 1 / Math.cos(r)) / Math.PI) / 2 * n); }
      for (var x = tx(b.getWest()) - 1; x <= tx(b.getEast()) + 1; x++) {
        for (var y = ty(b.getNorth()) - 1; y <= ty(b.getSouth()) + 1; y++) {
          var key = z + "/" + x + "/" + y;
          if (present.has(key) && !loaded.has(key)) {
            loaded.add(key);
            var s = document.createElement("script");
            s.src = "vectors/" + key + ".js";
            document.head.appendChild(s);
          }
        }
      }
    };
    map.on("moveend", refresh);
  }
  var group = L.layerGroup([polygons]);
  overlays[v && v.mode === "tiled" ? "landslide polygons (from zoom " + (v.zoom - 1) + ")" : "landslide polygons"] = group;
  group.addTo(map);
  map.on("overlayadd", function () { if (typeof refresh === "function") { refresh(); } });
  if (typeof refresh === "function") { refresh(); }

  function outline(name, title, style) {
    if (!M.data[name]) { return; }
    var layer = L.geoJSON(M.data[name], {style: style, interactive: false});
    overlays[title] = layer;
    layer.addTo(map);
  }
  outline("aoi", "area of interest", {color: "#1f78b4", weight: 2, fill: false, dashArray: "6 4"});
  outline("inventory", "inventory (reference)", {color: "#00c8ff", weight: 1, fill: false});
  L.control.layers(base, overlays, {collapsed: false}).addTo(map);

  // legend: the ramp, the threshold, the status colours
  var legend = L.control({position: "bottomright"});
  legend.onAdd = function () {
    var d = L.DomUtil.create("div", "legend");
    var stops = M.legend.ramp.map(function (s) { return "rgb(" + s[1].join(",") + ") " + (s[0] * 100) + "%"; }).join(", ");
    var t = M.legend.threshold;
    d.innerHTML = "<b>Landslide probability</b><div class='ramp' style='background: linear-gradient(to right, " + stops + ")'>" +
      (t === null ? "" : "<span class='tick' style='left:" + (t * 100) + "%'></span>") + "</div>" +
      "<div class='ramp-labels'><span>0</span><span>0.5</span><span>1</span></div>" +
      (t === null ? "" : "<div>polygons: p ≥ " + fmt(t, 2) + " (" + esc(M.legend.threshold_rule) + ")</div>") +
      M.legend.status.map(function (s) {
        return "<div><i style='background: rgba(" + s.rgba.slice(0, 3).join(",") + "," + (s.rgba[3] / 255) + ")'></i>" + esc(s.label) + "</div>";
      }).join("");
    return d;
  };
  legend.addTo(map);

  var info = L.control({position: "topleft"});
  info.onAdd = function () {
    var d = L.DomUtil.create("div", "info");
    d.innerHTML = "<b>" + esc(M.title) + "</b>" + M.facts.map(function (f) { return "<div>" + esc(f) + "</div>"; }).join("") +
      "<div class='files'>" + M.files.map(function (f) { return "<a href='" + encodeURI(f[1]) + "'>" + esc(f[0]) + "</a>"; }).join(" · ") + "</div>";
    L.DomEvent.disableClickPropagation(d);
    return d;
  };
  info.addTo(map);

  document.body.setAttribute("data-polygons", String(drawn));
  document.body.setAttribute("data-ready", "1");
})();
