"""Dataset adapters: each on-disk layout -> the common table, with broken files skipped and reported.

Every layout is rebuilt in ``tmp_path`` from tiny real PNG/JPEG/DICOM files (plus deliberately
broken ones), so these tests run anywhere; the ``needs_data`` tests check the real development
data's known counts.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from covidviz.data import adapters
from covidviz.data.adapters import (
    KINDS,
    kermany_patient,
    load_dataset,
    load_datasets,
    map_ieee_finding,
    parse_spec,
    parse_synthetic_options,
    read_nih_entries,
)
from covidviz.data.imageio import image_size
from covidviz.data.labels import MULTICLASS, MULTILABEL
from covidviz.data.splits import make_split
from covidviz.data.table import COLUMNS


def write_img(path: Path, size: int = 32, value: int = 128) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(value)
    arr = rng.integers(0, 255, (size, size), dtype=np.uint8)
    fmt = "JPEG" if path.suffix.lower() in (".jpg", ".jpeg") else "PNG"
    Image.fromarray(arr, mode="L").save(path, format=fmt)
    return path


def write_dicom(path: Path, size: int = 32) -> Path:
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    path.parent.mkdir(parents=True, exist_ok=True)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # digital X-ray
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.Modality, ds.PatientID = "DX", "dcm-patient"
    ds.Rows = ds.Columns = size
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = (np.arange(size * size, dtype=np.uint16) % 4096).tobytes()
    pydicom.dcmwrite(str(path), ds, enforce_file_format=True)
    return path


def write_junk(path: Path, text: str = "not an image") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def assert_table(df):
    assert list(df.columns) == COLUMNS
    assert df["image_id"].is_unique
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in df["path"])


# ------------------------------------------------------------------------------------------ specs

def test_parse_spec_and_unknown_kind():
    assert parse_spec("folder:/a/b") == ("folder", "/a/b")
    assert parse_spec("csv:C:/data/x.csv") == ("csv", "C:/data/x.csv")  # only the first ':' splits
    with pytest.raises(ValueError) as err:
        parse_spec("kaggle:/data")
    for kind in KINDS:
        assert kind in str(err.value)
    with pytest.raises(ValueError):
        parse_spec("/just/a/path")


def test_synthetic_option_syntax():
    o = parse_synthetic_options("600", seed=3)
    assert o == {"n": 600, "seed": 3, "size": 256, "difficulty": 0.5, "multilabel": False, "confounder": 0.0}
    o = parse_synthetic_options("600:multilabel:difficulty=0.3,confounder=0.8,seed=9,size=64")
    assert (o["multilabel"], o["difficulty"], o["confounder"], o["seed"], o["size"]) == (True, 0.3, 0.8, 9, 64)
    for bad in ("abc", "10:colour=red", "10:difficulty=hard", "0"):
        with pytest.raises(ValueError):
            parse_synthetic_options(bad)


def test_missing_path_is_file_not_found(tmp_path):
    for kind in ("folder", "csv", "nih", "covid-chestxray"):
        with pytest.raises(FileNotFoundError, match="does not exist"):
            load_dataset(f"{kind}:{tmp_path / 'nope'}")


# ----------------------------------------------------------------------------------------- folder

def make_radiography_db(root: Path) -> Path:
    """COVID-19 Radiography Database layout, mixing folders with and without an images/ level."""
    write_img(root / "COVID" / "images" / "COVID-1.png", value=1)
    write_img(root / "COVID" / "images" / "COVID-2.PNG", value=2)
    write_img(root / "COVID" / "masks" / "COVID-1.png", value=3)       # a mask, not an X-ray
    write_junk(root / "COVID" / "images" / "COVID-3.png")               # broken: text named .png
    write_img(root / "Normal" / "Normal-1.png", value=4)
    write_dicom(root / "Normal" / "Normal-2.dcm")
    write_img(root / "Viral Pneumonia" / "images" / "Viral Pneumonia-1.jpg", value=5)
    write_img(root / "Lung_Opacity" / "images" / "Lung_Opacity-1.jpeg", value=6)
    write_junk(root / "README.md.txt", "readme")
    return root


def test_folder_radiography_layout(tmp_path, caplog):
    root = make_radiography_db(tmp_path / "COVID-19_Radiography_Dataset")
    ds = load_dataset(f"folder:{root}")
    t = ds.table
    assert_table(t)
    assert ds.task == MULTICLASS and ds.kind == "folder"
    assert sorted(t["labels"]) == ["COVID-19", "COVID-19", "Lung Opacity", "Normal", "Normal", "Pneumonia"]
    assert not t["path"].str.contains("masks").any()
    assert t["path"].str.endswith(".dcm").sum() == 1
    assert t["image_id"].str.startswith("folder:COVID-19_Radiography_Dataset/").all()
    assert t["patient_id"].str.startswith("folder:COVID-19_Radiography_Dataset/").all()
    assert t["patient_id"].is_unique  # no patient info: one image per patient
    assert (t["given_split"] == "").all()
    # the broken file is reported, with a reason, and warned about
    assert len(ds.skipped) == 1 and ds.skipped[0][0].endswith("COVID-3.png")
    assert "unreadable" in ds.skipped[0][1]
    assert "skipped 1 of 7" in caplog.text
    assert "6 images" in ds.description and "1 skipped" in ds.description


def test_folder_records_lung_masks_named_like_their_image(tmp_path):
    """``COVID/images/x.png`` + ``COVID/masks/x.png`` (the Radiography Database's lung masks), also beside
    a class folder without an images/ level; a mask without its image is counted, not loaded."""
    root = make_radiography_db(tmp_path / "COVID-19_Radiography_Dataset")
    write_img(root / "Normal" / "masks" / "Normal-1.png", value=7)          # beside Normal/Normal-1.png
    write_img(root / "COVID" / "masks" / "COVID-99.png", value=8)           # no such image
    write_img(root / "COVID" / "masks" / "extra" / "COVID-2.png", value=9)  # deeper: not a mask of COVID-2
    ds = load_dataset(f"folder:{root}")
    t = ds.table.set_index("image_id")
    base = "folder:COVID-19_Radiography_Dataset/"
    assert t.loc[base + "COVID/images/COVID-1.png", "lung_mask"] == str(root / "COVID" / "masks" / "COVID-1.png")
    assert t.loc[base + "Normal/Normal-1.png", "lung_mask"] == str(root / "Normal" / "masks" / "Normal-1.png")
    assert (t["lung_mask"] != "").sum() == 2 and t.loc[base + "COVID/images/COVID-2.PNG", "lung_mask"] == ""
    assert not t["path"].str.contains("/masks/").any() and (t["mask"] == "").all()  # lesion masks: none
    assert any("annotator lung masks for 2 images" in n for n in ds.notes)
    assert any("2 mask images without an image" in n for n in ds.notes)


def test_csv_lung_mask_column(tmp_path):
    write_img(tmp_path / "a.png")
    write_img(tmp_path / "b.png", value=2)
    write_img(tmp_path / "lungs" / "a.png", value=3)
    (tmp_path / "metadata.csv").write_text("path,label,lung_mask\na.png,COVID-19,lungs/a.png\nb.png,Normal,\n")
    t = load_dataset(f"csv:{tmp_path}").table.set_index("path")
    assert t.loc[str(tmp_path / "a.png"), "lung_mask"] == str(tmp_path / "lungs" / "a.png")
    assert t.loc[str(tmp_path / "b.png"), "lung_mask"] == ""


def test_folder_wrapper_folder_gives_same_classes(tmp_path):
    make_radiography_db(tmp_path / "download" / "COVID-19_Radiography_Dataset")
    ds = load_dataset(f"folder:{tmp_path / 'download'}", check_images=False)
    assert set(ds.table["labels"]) == {"COVID-19", "Normal", "Pneumonia", "Lung Opacity"}
    assert len(ds.table) == 7 and ds.skipped == []  # check_images=False does not open files


def test_kermany_patient_ids():
    assert kermany_patient("person123_bacteria_456") == "person123"
    assert kermany_patient("person1_virus_6") == "person1"
    assert kermany_patient("IM-0115-0001") == "IM-0115"
    assert kermany_patient("NORMAL2-IM-1427-0001") == "IM-1427"
    assert kermany_patient("Normal-17") == "Normal-17"


def make_kermany(root: Path) -> Path:
    for split in ("train", "test"):
        write_img(root / split / "PNEUMONIA" / "person1_bacteria_1.jpeg")
        write_img(root / split / "PNEUMONIA" / "person1_virus_2.jpeg")
        write_img(root / split / "PNEUMONIA" / "person7_bacteria_30.jpeg")
        write_img(root / split / "NORMAL" / "IM-0115-0001.jpeg")
        write_img(root / split / "NORMAL" / "NORMAL2-IM-1427-0001.jpeg")
        write_img(root / split / "NORMAL" / "IM-0117-0001.jpeg")
    for i in range(40):  # a big enough train so the 2-image val counts as tiny (< 5 %)
        write_img(root / "train" / "NORMAL" / f"IM-{1000 + i}-0001.jpeg")
    write_img(root / "val" / "NORMAL" / "NORMAL2-IM-1440-0001.jpeg")
    write_img(root / "val" / "PNEUMONIA" / "person1946_bacteria_4874.jpeg")
    return root


def test_folder_kermany_layout(tmp_path):
    root = make_kermany(tmp_path / "chest_xray")
    ds = load_dataset(f"folder:{root}")
    t = ds.table.set_index("image_id")
    assert_table(ds.table)
    assert set(t["labels"]) == {"Normal", "Pneumonia"}
    assert len(t) == 6 + 6 + 40 + 2
    # split folders give given_split; the tiny val is folded into train (and said so)
    assert (t["given_split"] == "test").sum() == 6
    assert set(t["given_split"]) == {"train", "test"}
    assert t.loc["folder:chest_xray/val/NORMAL/NORMAL2-IM-1440-0001.jpeg", "given_split"] == "train"
    assert any("folded into train" in n for n in ds.notes)
    # patient ids from file names; person1's two films are one patient; test numbering is separate
    pid = t["patient_id"]
    assert pid["folder:chest_xray/train/PNEUMONIA/person1_bacteria_1.jpeg"] == \
        pid["folder:chest_xray/train/PNEUMONIA/person1_virus_2.jpeg"] == "folder:chest_xray/train/person1"
    assert pid["folder:chest_xray/test/PNEUMONIA/person1_virus_2.jpeg"] == "folder:chest_xray/test/person1"
    assert pid["folder:chest_xray/train/NORMAL/NORMAL2-IM-1427-0001.jpeg"] == "folder:chest_xray/train/IM-1427"


def test_folder_kermany_nested_copy_is_deduplicated(tmp_path):
    # The Kaggle zip holds chest_xray/{train,test,val} and a full copy in chest_xray/chest_xray/.
    root = make_kermany(tmp_path / "chest_xray")
    make_kermany(root / "chest_xray")
    write_img(root / "__MACOSX" / "train" / "NORMAL" / "._IM-0115-0001.jpeg")
    ds = load_dataset(f"folder:{root}")
    assert len(ds.table) == 54
    assert len(ds.skipped) == 54 and all(r.startswith("duplicate of") for _, r in ds.skipped)
    assert not ds.table["path"].str.contains("MACOSX").any()


def test_folder_without_images_or_all_broken(tmp_path):
    (tmp_path / "empty" / "COVID").mkdir(parents=True)
    with pytest.raises(ValueError, match="empty"):
        load_dataset(f"folder:{tmp_path / 'empty'}")
    write_junk(tmp_path / "bad" / "COVID" / "a.png")
    write_junk(tmp_path / "bad" / "Normal" / "b.png")
    with pytest.raises(ValueError, match=r"no usable images.*bad"):
        load_dataset(f"folder:{tmp_path / 'bad'}")


# -------------------------------------------------------------------------------------------- csv

def test_csv_manifest_variants_and_broken_rows(tmp_path, caplog):
    root = tmp_path / "mydata"
    write_img(root / "img" / "a.png", value=1)
    write_img(root / "img" / "b.png", value=2)
    write_img(root / "img" / "c.png", value=3)
    outside = write_img(tmp_path / "elsewhere" / "d.png", value=4)
    write_junk(root / "img" / "broken.png")
    write_img(root / "img" / "m.png", value=5)
    (root / "metadata.csv").write_text(
        "Image Path,Label,Patient ID,Gender,Age,Split,View Position,mask\n"
        "img/a.png,covid,P1,female,058Y,train,PA,img/m.png\n"
        "img/b.png,Viral Pneumonia,P1,M,61,train,AP,\n"
        "img/c.png,NORMAL,hospital:77,,,Test,PA,\n"
        f"{outside},normal,,F,6M,,,\n"
        "img/missing.png,normal,P9,,,,,\n"
        "img/broken.png,normal,P8,,,,,\n")
    ds = load_dataset(f"csv:{root}")  # a folder holding metadata.csv
    t = ds.table.set_index("path")
    assert_table(ds.table)
    assert ds.task == MULTICLASS and len(t) == 4
    a, c, d = str(root / "img" / "a.png"), str(root / "img" / "c.png"), str(outside)
    assert t.loc[a, "labels"] == "COVID-19" and t.loc[str(root / "img" / "b.png"), "labels"] == "Pneumonia"
    assert t.loc[a, "patient_id"] == t.loc[str(root / "img" / "b.png"), "patient_id"] == "csv:mydata/P1"
    assert t.loc[c, "patient_id"] == "hospital:77"          # already namespaced: kept
    assert t.loc[d, "patient_id"].startswith("csv:mydata/")  # unknown patient: its own
    assert (t.loc[a, "sex"], t.loc[a, "age"], t.loc[a, "view"]) == ("F", 58.0, "PA")
    assert t.loc[d, "age"] == pytest.approx(0.5)
    assert t.loc[c, "given_split"] == "test" and t.loc[d, "given_split"] == ""
    assert t.loc[a, "mask"] == str(root / "img" / "m.png")
    assert t.loc[a, "source"] == "mydata"
    reasons = dict(ds.skipped)
    assert reasons[str(root / "img" / "missing.png")] == "file not found"
    assert "unreadable" in reasons[str(root / "img" / "broken.png")]
    assert "skipped 2 of 6" in caplog.text


def test_csv_multilabel(tmp_path):
    for n in "abc":
        write_img(tmp_path / f"{n}.png")
    (tmp_path / "list.csv").write_text("path,labels,patient\na.png,Effusion|Mass,1\nb.png,No Finding,2\nc.png,Mass,3\n")
    ds = load_dataset(f"csv:{tmp_path / 'list.csv'}")
    assert ds.task == MULTILABEL and ds.name == "list"
    assert list(ds.table["labels"]) == ["Effusion|Mass", "", "Mass"]
    # a single 'label' column becomes multi-label as soon as one cell holds '|'
    (tmp_path / "one.csv").write_text("path,label\na.png,Effusion|Mass\nb.png,Normal\n")
    assert load_dataset(f"csv:{tmp_path / 'one.csv'}").task == MULTILABEL


def test_csv_errors(tmp_path):
    (tmp_path / "nolabel.csv").write_text("path,patient_id\na.png,1\n")
    with pytest.raises(ValueError, match="label"):
        load_dataset(f"csv:{tmp_path / 'nolabel.csv'}")
    (tmp_path / "nopath.csv").write_text("label\nNormal\n")
    with pytest.raises(ValueError, match="path column"):
        load_dataset(f"csv:{tmp_path / 'nopath.csv'}")
    (tmp_path / "allmissing.csv").write_text("path,label\nx.png,Normal\ny.png,COVID\n")
    with pytest.raises(ValueError, match="allmissing.csv has no usable images"):
        load_dataset(f"csv:{tmp_path / 'allmissing.csv'}")


# -------------------------------------------------------------------------------------------- nih

NIH_HEADER = ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
              "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]\n")


def make_nih(root: Path) -> Path:
    write_img(root / "images_001" / "images" / "00000001_000.png", size=64)
    write_img(root / "images_001" / "images" / "00000001_001.png", size=64)
    write_img(root / "images_002" / "00000002_000.png", size=64)      # no inner images/ level
    write_img(root / "images" / "00000003_000.png", size=64)
    (root / "Data_Entry_2017.csv").write_text(
        NIH_HEADER
        + "00000001_000.png,Cardiomegaly,0,1,058Y,M,PA,2682,2749,0.143,0.143\n"
        + "00000001_001.png,Cardiomegaly|Emphysema,1,1,58,M,PA,2894,2729,0.143,0.143,\n"  # trailing comma
        + "00000002_000.png,No Finding,0,2,81,F,AP,2500,2048,0.171,0.171\n"
        + "00000003_000.png,Infiltration,0,3,414,F,PA,2048,2500,0.168,0.168\n"
        + "00000004_000.png,Mass,0,4,30,M,PA,2048,2500,0.168,0.168\n")  # not downloaded
    (root / "BBox_List_2017.csv").write_text(
        "Image Index,Finding Label,Bbox [x,y,w,h],,,\n"
        "00000001_000.png,Cardiomegaly,256,512,512,256\n"
        "00000003_000.png,Infiltrate,0,0,102.4,1024\n"
        "00000003_000.png,Infiltrate,512,0,102.4,102.4\n")
    (root / "test_list.txt").write_text("00000002_000.png\n00000004_000.png\n")
    (root / "train_val_list.txt").write_text("00000001_000.png\n00000001_001.png\n00000003_000.png\n")
    return root


def test_nih_entries_quirky_header(tmp_path):
    root = make_nih(tmp_path / "nih")
    e = read_nih_entries(root / "Data_Entry_2017.csv")
    assert len(e) == 5 and e.loc[0, "orig_height"] == "2749" and e.loc[1, "spacing_y"] == "0.143"


def test_nih_adapter(tmp_path, caplog):
    root = make_nih(tmp_path / "nih")
    ds = load_dataset(f"nih:{root}")
    t = ds.table.set_index("image_id")
    assert_table(ds.table)
    assert ds.task == MULTILABEL and len(t) == 4
    assert t.loc["nih:nih/00000001_001.png", "labels"] == "Cardiomegaly|Emphysema"
    assert t.loc["nih:nih/00000002_000.png", "labels"] == ""          # No Finding = no labels
    assert t.loc["nih:nih/00000001_000.png", "patient_id"] == t.loc["nih:nih/00000001_001.png", "patient_id"] == "nih:1"
    assert t.loc["nih:nih/00000001_000.png", "age"] == 58.0
    assert math.isnan(t.loc["nih:nih/00000003_000.png", "age"])        # 414 years is a typo
    assert (t.loc["nih:nih/00000002_000.png", "sex"], t.loc["nih:nih/00000002_000.png", "view"]) == ("F", "AP")
    assert t.loc["nih:nih/00000002_000.png", "given_split"] == "test"
    assert t.loc["nih:nih/00000001_000.png", "given_split"] == "train"  # val is carved by the splitter
    # images found across images_001/images, images_002/, images/
    assert t.loc["nih:nih/00000002_000.png", "path"] == str(root / "images_002" / "00000002_000.png")
    # the listed but absent image is skipped and reported
    assert len(ds.skipped) == 1 and "00000004_000.png" in ds.skipped[0][0] and "not found" in ds.skipped[0][1]
    assert "skipped 1 of 5" in caplog.text
    # boxes: fractions of the 1024 px release, label spelling folded to the finding name
    box = json.loads(t.loc["nih:nih/00000001_000.png", "bbox"])
    assert box == [{"label": "Cardiomegaly", "x": 0.25, "y": 0.5, "w": 0.5, "h": 0.25}]
    boxes = json.loads(t.loc["nih:nih/00000003_000.png", "bbox"])
    assert [b["label"] for b in boxes] == ["Infiltration", "Infiltration"] and boxes[0]["h"] == 1.0
    assert t.loc["nih:nih/00000002_000.png", "bbox"] == ""


def test_nih_boxed_images_are_kept_for_test_without_official_lists(tmp_path):
    """Without test_list/train_val_list the expert boxes go to test with their patients, so the pointing
    game on them is measured on images the model never saw; with the lists, the official split stands."""
    root = make_nih(tmp_path / "nih")
    official = load_dataset(f"nih:{root}").table.set_index("image_id")
    assert official.loc["nih:nih/00000001_000.png", "given_split"] == "train"   # boxed, but listed in train_val
    (root / "test_list.txt").unlink()
    (root / "train_val_list.txt").unlink()
    ds = load_dataset(f"nih:{root}")
    t = ds.table.set_index("image_id")
    assert list(t.loc[t["bbox"] != "", "given_split"]) == ["test", "test"]
    assert set(t.loc[t["bbox"] == "", "given_split"]) == {""}
    assert any("2 images with expert boxes" in n for n in ds.notes)
    split = make_split(ds.table, fractions=(1.0, 0.0, 0.0)).set_axis(ds.table["image_id"])  # 3 patients: no val
    # patient 1's unboxed follow-up film goes with the boxed one: no patient in two splits
    assert split["nih:nih/00000001_001.png"] == split["nih:nih/00000001_000.png"] == "test"
    assert split["nih:nih/00000003_000.png"] == "test" and split["nih:nih/00000002_000.png"] == "train"


def test_nih_without_label_file(tmp_path):
    (tmp_path / "nih" / "images").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="Data_Entry"):
        load_dataset(f"nih:{tmp_path / 'nih'}")


# -------------------------------------------------------------------------------- covid-chestxray

def test_map_ieee_finding():
    assert map_ieee_finding("Pneumonia/Viral/COVID-19") == "COVID-19"
    assert map_ieee_finding("COVID-19") == "COVID-19"
    assert map_ieee_finding("Pneumonia/Bacterial/Streptococcus") == "Pneumonia"
    assert map_ieee_finding("Pneumonia/Viral/SARS") == "Pneumonia"
    assert map_ieee_finding("Pneumonia/Fungal/Pneumocystis") == "Pneumonia"
    assert map_ieee_finding("Pneumonia") == "Pneumonia"
    assert map_ieee_finding("No Finding") == "Normal"
    assert map_ieee_finding("Tuberculosis") == "Tuberculosis"
    assert map_ieee_finding("todo") == ""


def test_covid_chestxray_adapter(tmp_path):
    root = tmp_path / "covid-chestxray-dataset"
    for i in range(1, 7):
        write_img(root / "images" / f"{i}.png", value=i)
    write_img(root / "volumes" / "7.png")
    (root / "metadata.csv").write_text(
        "patientid,offset,sex,age,finding,RT_PCR_positive,survival,view,modality,date,location,folder,filename,doi,url,license,clinical_notes,other_notes\n"
        "2,0,M,65,Pneumonia/Viral/COVID-19,Y,Y,PA,X-ray,2020,China,images,1.png,,,,\n"
        "2,3,M,65,Pneumonia/Viral/COVID-19,Y,Y,AP Supine,X-ray,2020,China,images,2.png,,,,\n"
        "3,,F,40,Pneumonia/Bacterial/Streptococcus,,,AP semi erect,X-ray,,,images,3.png,,,,\n"
        "4,,F,,No Finding,,,L,X-ray,,,images,4.png,,,,\n"                 # lateral: excluded
        "5,,,,Tuberculosis,,,PA,X-ray,,,images,5.png,,,,\n"
        "6,,M,50,Pneumonia/Viral/COVID-19,,,Axial,CT,,,volumes,7.png,,,,\n"  # CT: excluded
        "7,,M,50,Pneumonia/Viral/SARS,,,AP,X-ray,,,images,missing.png,,,,\n")
    ds = load_dataset(f"covid-chestxray:{root}")
    t = ds.table
    assert_table(t)
    assert ds.task == MULTICLASS
    assert list(t["labels"]) == ["COVID-19", "COVID-19", "Pneumonia", "Tuberculosis"]
    assert list(t["patient_id"]) == ["ieee8023:2", "ieee8023:2", "ieee8023:3", "ieee8023:5"]
    assert list(t["view"]) == ["PA", "AP Supine", "AP semi erect", "PA"]
    assert set(t["source"]) == {"ieee8023"}
    assert len(ds.skipped) == 1 and ds.skipped[0][0].endswith("missing.png")
    assert "view L" in ds.notes[0] and "modality CT" in ds.notes[0]


# -------------------------------------------------------------------------------------- synthetic

def test_synthetic_adapter_cached(tmp_path):
    ds = load_dataset("synthetic:18:size=64", cache_dir=tmp_path, seed=1)
    assert_table(ds.table)
    assert ds.task == MULTICLASS and len(ds.table) == 18
    assert set(ds.table["labels"]) == {"COVID-19", "Normal", "Pneumonia"}
    assert Path(ds.root).parent == tmp_path / "synthetic"
    assert ds.table["patient_id"].str.startswith(f"synthetic:{Path(ds.root).name}/").all()
    assert (ds.table["mask"] != "").any() and all(Path(m).is_absolute() for m in ds.table["mask"] if m)
    mtime = (Path(ds.root) / "metadata.csv").stat().st_mtime_ns
    again = load_dataset("synthetic:18:size=64", cache_dir=tmp_path, seed=1)
    assert again.root == ds.root and (Path(ds.root) / "metadata.csv").stat().st_mtime_ns == mtime
    other = load_dataset("synthetic:18:size=64", cache_dir=tmp_path, seed=2)
    assert other.root != ds.root
    ml = load_dataset("synthetic:18:multilabel,size=64", cache_dir=tmp_path)
    assert ml.task == MULTILABEL and "Normal" not in set(ml.table["labels"])


# ----------------------------------------------------------------------------------------- merging

def test_load_datasets_merges_into_one_label_space(tmp_path):
    folder = make_radiography_db(tmp_path / "radiography")
    nih = make_nih(tmp_path / "nih")
    table, space, parts = load_datasets([f"folder:{folder}", f"nih:{nih}"])
    assert len(table) == len(parts[0].table) + len(parts[1].table)
    assert table["image_id"].is_unique
    assert space.task == MULTILABEL
    assert {"COVID-19", "Pneumonia", "Lung Opacity", "Cardiomegaly"} <= set(space.names)
    assert "Normal" not in space.names
    table, space, _ = load_datasets([f"folder:{folder}"])
    assert space.task == MULTICLASS and space.names[0] == "COVID-19"


# ------------------------------------------------------------------------------------- real data

@pytest.mark.needs_data
def test_real_covid3_counts(shared_data):
    ds = load_dataset(f"csv:{shared_data / 'covid3'}")
    t = ds.table
    assert ds.skipped == [] and ds.task == MULTICLASS
    assert len(t) == 612 and t["patient_id"].nunique() == 466
    assert t["labels"].value_counts().to_dict() == {"Normal": 246, "Pneumonia": 198, "COVID-19": 168}
    assert set(t["source"]) == {"hannover", "ieee8023", "kermany", "nih"}


@pytest.mark.needs_data
def test_real_nih14_counts_and_boxes(shared_data):
    ds = load_dataset(f"nih:{shared_data / 'nih14'}")
    t = ds.table
    assert ds.skipped == [] and ds.task == MULTILABEL and len(t) == 436
    boxed = t[t["bbox"] != ""]
    assert len(boxed) == 7
    for _, row in boxed.iterrows():
        w, h = image_size(row["path"])
        for b in json.loads(row["bbox"]):
            assert b["label"] in row["labels"].split("|")
            x0, y0, x1, y1 = b["x"] * w, b["y"] * h, (b["x"] + b["w"]) * w, (b["y"] + b["h"]) * h
            assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
            if b["label"] == "Cardiomegaly":  # the heart box straddles the midline, mid-chest
                assert x0 < w / 2 < x1 and h * 0.2 < (y0 + y1) / 2 < h * 0.8


@pytest.mark.needs_data
def test_real_merge_shares_nih_patients(shared_data):
    # covid3's nih rows use the same 'nih:<Patient ID>' ids, so a merge keeps those patients whole.
    table, space, parts = load_datasets([f"csv:{shared_data / 'covid3'}", f"nih:{shared_data / 'nih14'}"])
    shared = set(parts[0].table["patient_id"]) & set(parts[1].table["patient_id"])
    assert len(shared) > 0 and all(p.startswith("nih:") for p in shared)
    assert space.task == MULTILABEL and len(space.names) == 15


def test_adapter_module_lists_every_kind():
    assert set(KINDS) == {"folder", "csv", "nih", "covid-chestxray", "synthetic"}
    assert adapters.__doc__ and "synthetic:N[:OPTIONS]" in adapters.__doc__
