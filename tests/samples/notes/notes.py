"""Notes: a one-module Flask app, shaped like most tutorials (not like the toolkit's demo).

No factory, no package, classic Flask-SQLAlchemy models, migrations from `flask db init`,
requirements.txt without hashes, and no health endpoint of its own.
"""
import os

import docopt  # publishes only an sdist: the deploy builds its wheel
from flask import Flask, abort, jsonify, request
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy

app = Flask(__name__)
app.config["SQLALCHEMY_DATABASE_URI"] = os.environ.get("DATABASE_URL", "").replace(
    "postgresql://", "postgresql+psycopg2://", 1)
app.config["SECRET_KEY"] = os.environ.get("SECRET_KEY", "change-me")
db = SQLAlchemy(app)
migrate = Migrate(app, db)


class Note(db.Model):
    id = db.Column(db.Integer, primary_key=True)
    title = db.Column(db.String(64), nullable=False)
    body = db.Column(db.Text)


@app.get("/notes")
def list_notes():
    return jsonify([{"id": n.id, "title": n.title} for n in Note.query.order_by(Note.id)])


@app.post("/notes")
def add_note():
    title = (request.get_json(silent=True) or {}).get("title")
    if not title:
        abort(400)
    note = Note(title=title)
    db.session.add(note)
    db.session.commit()
    return jsonify(id=note.id, title=note.title), 201


@app.get("/about")
def about():
    return jsonify(app="notes", docopt=docopt.__version__)
